//! Request bodies read under a deadline that moves only with the bytes received, and the
//! answer to one that is too slow.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::respond::text;
use crate::access::jmap::push::Body;

/// How long any request body may take to arrive, besides what its size earns at
/// [`BODY_RATE_FLOOR`]: a deadline from the body's start that moves out only with bytes
/// received, never with time spent waiting.
const BODY_GRACE: Duration = Duration::from_secs(10);
/// Bytes per second a request body (API request or upload) must average after the grace:
/// a 10 MiB request may take 10 s + 160 s, a trickle of a byte a second gets 10 s.
const BODY_RATE_FLOOR: u64 = 64 << 10;
/// Why a request body was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BodyError {
    TooLarge,
    /// It did not arrive by its deadline (see [`body_deadline`]).
    TooSlow,
    Broken,
}

/// When a body that began at `start` and has brought `received` bytes so far must be done:
/// the grace, plus the time its bytes earn at the rate floor.
fn body_deadline(start: tokio::time::Instant, received: usize) -> tokio::time::Instant {
    let earned = Duration::from_millis((received as u64).saturating_mul(1000) / BODY_RATE_FLOOR);
    start + BODY_GRACE + earned
}

/// Reads a request body of at most `limit` bytes under its deadline. A body over the limit is
/// still read (and dropped, not kept) up to as much again, so that a client that sends its
/// whole body before it reads the answer gets the `limit` problem rather than a reset.
pub(super) async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let start = tokio::time::Instant::now();
    let mut over = hyper::body::Body::size_hint(&body).lower() > limit as u64;
    let mut bytes = bytes::BytesMut::new();
    let mut received = 0usize;
    loop {
        let deadline = body_deadline(start, received);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if over => return Err(BodyError::TooLarge),
            Err(_) => return Err(BodyError::TooSlow),
            Ok(None) if over => return Err(BodyError::TooLarge),
            Ok(None) => return Ok(bytes.freeze()),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received = received.saturating_add(data.len());
        over = over || received > limit;
        if over {
            bytes = bytes::BytesMut::new();
            if received > limit.saturating_mul(2) {
                return Err(BodyError::TooLarge);
            }
        } else {
            bytes.extend_from_slice(&data);
        }
    }
}

/// The answer to a body that did not arrive in time; the connection is closed after it.
pub(super) fn too_slow() -> Response<Body> {
    let mut response = text(
        StatusCode::REQUEST_TIMEOUT,
        "the request body did not arrive in time\n",
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_deadlines_move_with_bytes_received_not_with_time() {
        let start = tokio::time::Instant::now();
        assert_eq!(body_deadline(start, 0), start + BODY_GRACE);
        // A byte a second earns almost nothing: 150 bytes still end within the grace + 3 ms.
        assert!(body_deadline(start, 150) < start + BODY_GRACE + Duration::from_millis(3));
        // A 10 MiB body at the floor rate has its time.
        assert_eq!(
            body_deadline(start, 10 << 20),
            start + BODY_GRACE + Duration::from_secs(160)
        );
    }
}
