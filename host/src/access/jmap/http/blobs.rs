//! Blob upload and download (RFC 8620 §6).

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::body::{read_body, too_slow, BodyError};
use super::respond::{json_response, problem, text};
use super::Peer;
use crate::access::jmap::api::Problem;
use crate::access::jmap::push::Body;
use crate::access::jmap::Jmap;
use crate::store::names::UserName;

/// `POST /jmap/upload/{accountId}/`: the body becomes a blob (RFC 8620 §6.1).
pub(super) async fn upload(jmap: &Jmap, user: &str, request: Request<Incoming>) -> Response<Body> {
    let account = request
        .uri()
        .path()
        .trim_start_matches("/jmap/upload/")
        .trim_end_matches('/')
        .to_string();
    if account != Jmap::account_id(user) {
        return text(StatusCode::NOT_FOUND, "no such account\n");
    }
    let media_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let Ok(_slot) = jmap.upload_slot(user).try_acquire_owned() else {
        return problem(&Problem::limit(
            "maxConcurrentUpload",
            "too many uploads at once",
        ));
    };
    let limit = jmap.limits.max_size_upload;
    let bytes = match read_body(request.into_body(), limit).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return problem(&Problem::limit(
                "maxSizeUpload",
                format!("uploads are at most {limit} bytes"),
            ))
        }
        Err(BodyError::TooSlow) => return too_slow(),
        Err(BodyError::Broken) => return text(StatusCode::BAD_REQUEST, "broken request body\n"),
    };
    match jmap.upload(user, &bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::QuotaExceeded => problem(&Problem::limit(
            "maxUploadStore",
            "this user's uploads fill their store: use or wait for them to expire",
        )),
        Ok(blob) => json_response(
            StatusCode::CREATED,
            &serde_json::json!({"accountId": account, "blobId": blob, "type": media_type, "size": bytes.len()}),
        ),
        Err(e) => {
            tracing::warn!(user, "JMAP upload: {e}");
            problem(&Problem::unavailable("cannot store the upload now"))
        }
    }
}

/// `/jmap/download/{accountId}/{blobId}/{name}?accept={type}`.
pub(super) async fn download(
    jmap: &Jmap,
    peer: &Peer,
    user: &UserName,
    request: &Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path();
    let mut pieces = path.trim_start_matches("/jmap/download/").splitn(3, '/');
    let (Some(account), Some(blob), name) = (pieces.next(), pieces.next(), pieces.next()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if account != Jmap::account_id(user) {
        return text(StatusCode::NOT_FOUND, "no such blob\n");
    }
    // Taken before the blob is read: a client cannot make the server hold more than this
    // many blobs of a user, however many downloads it starts and leaves unread.
    let Ok(slot) = jmap.download_slot(user).try_acquire_owned() else {
        let mut refused = text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many downloads at once\n",
        );
        refused
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return refused;
    };
    let bytes = match jmap.blob(user, &peer.session(user), blob).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return text(StatusCode::NOT_FOUND, "no such blob\n"),
        Err(_) => return problem(&Problem::unavailable("the mail store cannot be read now")),
    };
    let accept = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("accept=")))
        .map(percent_decode)
        .filter(|t| t.contains('/') && t.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "application/octet-stream".into());
    let name = percent_decode(name.unwrap_or("blob"));
    let safe_name: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    let length = bytes.len();
    let mut response = Response::new(in_chunks(bytes.into(), slot));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{safe_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, immutable, max-age=604800"),
    );
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Bytes of a download handed to the connection at a time.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// A download's body, given to the connection a chunk at a time as the client takes it, so
/// that `slot` is held (and the download counted) until the client has (nearly) all of it,
/// or the connection ends (the write stall cuts a client that stops reading).
fn in_chunks(mut bytes: bytes::Bytes, slot: tokio::sync::OwnedSemaphorePermit) -> Body {
    let (chunks, body) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let _slot = slot;
        while !bytes.is_empty() {
            let chunk = bytes.split_to(bytes.len().min(DOWNLOAD_CHUNK));
            if chunks.send(chunk).await.is_err() {
                // The connection is gone.
                break;
            }
        }
    });
    Body::Stream(body)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%20b%2Fc+d%zz"), "a b/c d%zz");
        assert_eq!(percent_decode("%"), "%");
    }
}
