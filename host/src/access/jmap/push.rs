//! Push over an event source (RFC 8620 §7.3): `GET /jmap/eventsource?types=…&closeafter=…
//! &ping=…` answers `text/event-stream`; a `state` event names the account's new Email,
//! Mailbox and Thread states whenever they move (by JMAP, IMAP, POP3 or a delivery), `ping`
//! events keep idle proxies from closing the stream. The stream ends when the client goes,
//! with `closeafter=state` after the first change, or when the server drains.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::mpsc;

/// How often the account is looked at for changes.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Pings are at least this far apart, whatever the client asks.
const MIN_PING: u64 = 5;

/// A response body: whole, or a stream of chunks from a task.
pub enum Body {
    Whole(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn whole(bytes: impl Into<Bytes>) -> Body {
        Body::Whole(Some(bytes.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(receiver) => receiver
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Whole(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Whole(Some(bytes)) => hyper::body::SizeHint::with_exact(bytes.len() as u64),
            Body::Whole(None) => hyper::body::SizeHint::with_exact(0),
            Body::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// What the client asked of its event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Types to report (`*` or a list); empty means all.
    pub types: Vec<String>,
    pub close_after_state: bool,
    /// Seconds between pings; 0 for none.
    pub ping: u64,
}

impl Options {
    /// From the query string of the event source URL.
    pub fn parse(query: &str) -> Options {
        let mut options = Options {
            types: Vec::new(),
            close_after_state: false,
            ping: 0,
        };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "types" if value != "*" => {
                    options.types = value
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                "closeafter" => options.close_after_state = value == "state",
                "ping" => {
                    options.ping =
                        value
                            .parse::<u64>()
                            .map_or(0, |p| if p == 0 { 0 } else { p.max(MIN_PING) })
                }
                _ => {}
            }
        }
        options
    }

    fn wants(&self, kind: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == kind)
    }
}

/// The states an event reports: `(type, state)`.
pub type States = Vec<(&'static str, String)>;

/// One `state` event: the changed types of the account and their states.
pub fn state_event(account_id: &str, states: &States, options: &Options) -> Option<Bytes> {
    let changed: serde_json::Map<String, serde_json::Value> = states
        .iter()
        .filter(|(kind, _)| options.wants(kind))
        .map(|(kind, state)| (kind.to_string(), state.clone().into()))
        .collect();
    if changed.is_empty() {
        return None;
    }
    let data = json!({"@type": "StateChange", "changed": {account_id: changed}});
    Some(Bytes::from(format!("event: state\ndata: {data}\n\n")))
}

pub fn ping_event(interval: u64) -> Bytes {
    Bytes::from(format!(
        "event: ping\ndata: {{\"interval\":{interval}}}\n\n"
    ))
}

/// Feeds the stream: `look` gives the account's states now; an event goes out whenever they
/// differ from the last ones sent, starting from `baseline` (taken before the stream was
/// answered, so nothing that happens after the client connected is missed).
pub async fn run<F, Fut>(
    sender: mpsc::Sender<Bytes>,
    (account_id, options): (String, Options),
    baseline: States,
    mut look: F,
    stop: impl std::future::Future<Output = ()>,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = States>,
{
    tokio::pin!(stop);
    let mut last = baseline;
    let mut tick = tokio::time::interval(LOOK_EVERY);
    let ping_every = Duration::from_secs(options.ping.max(1));
    let mut next_ping = tokio::time::Instant::now() + ping_every;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
            () = sender.closed() => return,
        }
        let now = look().await;
        if now != last {
            let changed: States = now
                .iter()
                .filter(|(kind, state)| !last.iter().any(|(k, s)| k == kind && s == state))
                .cloned()
                .collect();
            last = now;
            if let Some(event) = state_event(&account_id, &changed, &options) {
                if sender.send(event).await.is_err() {
                    return;
                }
                if options.close_after_state {
                    return;
                }
            }
        }
        if options.ping > 0 && tokio::time::Instant::now() >= next_ping {
            next_ping += ping_every;
            if sender.send(ping_event(options.ping)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_from_the_query() {
        let options = Options::parse("types=Email,Mailbox&closeafter=state&ping=1");
        assert_eq!(options.types, vec!["Email", "Mailbox"]);
        assert!(options.close_after_state);
        assert_eq!(
            options.ping, MIN_PING,
            "pings are not more often than the minimum"
        );
        let all = Options::parse("types=*&closeafter=no&ping=0");
        assert!(all.types.is_empty() && !all.close_after_state && all.ping == 0);
    }

    #[test]
    fn state_events_name_only_the_wanted_types() {
        let options = Options::parse("types=Email");
        let states = vec![("Email", "e-2".to_string()), ("Mailbox", "e-1".to_string())];
        let event = state_event("A1", &states, &options).expect("an event");
        let text = String::from_utf8_lossy(&event);
        assert!(text.starts_with("event: state\ndata: "), "{text}");
        assert!(text.contains(r#""A1":{"Email":"e-2"}"#), "{text}");
        assert!(state_event("A1", &vec![("Mailbox", "x".into())], &options).is_none());
    }

    #[tokio::test]
    async fn a_change_is_sent_once_and_closeafter_ends_the_stream() {
        let (sender, mut receiver) = mpsc::channel(4);
        let mut looks = 0;
        let task = tokio::spawn(run(
            sender,
            ("A1".into(), Options::parse("closeafter=state")),
            vec![("Email", "s-1".to_string())],
            move || {
                looks += 1;
                let state = if looks < 2 { "s-1" } else { "s-2" };
                async move { vec![("Email", state.to_string())] }
            },
            std::future::pending(),
        ));
        let event = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .expect("in time")
            .expect("an event");
        assert!(String::from_utf8_lossy(&event).contains("s-2"));
        assert!(
            receiver.recv().await.is_none(),
            "closed after the state event"
        );
        task.await.expect("task");
    }
}
