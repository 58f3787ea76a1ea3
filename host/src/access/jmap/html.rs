//! The HTML document the webmail shows of a message. A stored message is its sender's input,
//! so the sanitiser's work is bounded before it starts: the HTML's size, its nesting depth
//! and its number of elements are measured by one linear scan (html5ever's tree builder
//! looks through the stack of open elements for many tags, so 100 000 nested `<div>`s cost
//! it minutes); what is over a bound is shown as text instead. The work runs on the blocking
//! pool, a few at a time, never under the account's lock, with a deadline after which the
//! page gets the text rendering; every result is kept per message, so a second open is free.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::html_scan::{strip_tags, within_bounds, Over};
use super::message;
use super::webmail::{self, Images};
use crate::message::Message;

/// A sanitised body larger than this is replaced by the text rendering.
pub const MAX_OUTPUT: usize = 8 << 20;
/// How long a request waits for the sanitiser before it answers with the text rendering
/// (the work goes on, and its result is kept for the next open).
const DEADLINE: Duration = Duration::from_secs(5);
/// Documents kept, by total size.
const CACHE_BYTES: usize = 64 << 20;

/// The document of a message for the frame, and how many remote images it has (blocked or
/// not: the page offers to show them when there are some).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub document: String,
    pub remote_images: usize,
}

impl View {
    fn text(document: String) -> View {
        View {
            document,
            remote_images: 0,
        }
    }
}

/// Sanitised documents by (user, message bytes, images), and the sanitisers running.
pub struct HtmlViews {
    cache: Mutex<Cache>,
    /// Sanitisations at once (each keeps one blocking thread busy).
    permits: Arc<tokio::sync::Semaphore>,
}

#[derive(Default)]
struct Cache {
    documents: HashMap<[u8; 32], Arc<View>>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
    /// Keys whose sanitisation is under way (a second open does not start another).
    running: HashSet<[u8; 32]>,
}

impl Cache {
    fn insert(&mut self, key: [u8; 32], view: Arc<View>) {
        let size = view.document.len();
        if size > CACHE_BYTES || self.documents.contains_key(&key) {
            return;
        }
        while self.bytes.saturating_add(size) > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.documents.remove(&old) {
                self.bytes = self.bytes.saturating_sub(gone.document.len());
            }
        }
        self.bytes = self.bytes.saturating_add(size);
        self.order.push_back(key);
        self.documents.insert(key, view);
    }
}

impl Default for HtmlViews {
    fn default() -> HtmlViews {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        HtmlViews {
            cache: Mutex::new(Cache::default()),
            permits: Arc::new(tokio::sync::Semaphore::new(cores.max(1))),
        }
    }
}

impl HtmlViews {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The document of a message (`raw`, as served to `user`), from the cache or made now.
    pub async fn document(
        self: &Arc<Self>,
        user: &str,
        raw: Arc<Vec<u8>>,
        images: Images,
    ) -> Arc<View> {
        let key = {
            let (user, source) = (user.to_string(), raw.clone());
            match tokio::task::spawn_blocking(move || cache_key(&user, images, &source)).await {
                Ok(key) => key,
                Err(_) => return fallback(raw, Over::Time).await,
            }
        };
        let started = {
            let mut cache = self.cache();
            if let Some(document) = cache.documents.get(&key) {
                return document.clone();
            }
            cache.running.insert(key)
        };
        if !started {
            // Being made for an earlier open that gave up waiting.
            return fallback(raw, Over::Time).await;
        }
        let permit =
            match tokio::time::timeout(DEADLINE, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    self.cache().running.remove(&key);
                    return fallback(raw, Over::Time).await;
                }
            };
        let views = self.clone();
        let source = raw.clone();
        let work = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let running = Running(&views, key);
            let document = Arc::new(render(&Html::of(&source), images));
            running.0.cache().insert(key, document.clone());
            document
        });
        match tokio::time::timeout(DEADLINE, work).await {
            Ok(Ok(document)) => document,
            // Over the deadline: the work goes on and keeps its result for the next open.
            Ok(Err(_)) | Err(_) => fallback(raw, Over::Time).await,
        }
    }
}

/// A sanitisation under way: its key leaves the running set however the work ends (a panic
/// included), so that a later open can try again.
struct Running<'a>(&'a HtmlViews, [u8; 32]);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.cache().running.remove(&self.1);
    }
}

/// The text rendering of a message, made on the blocking pool (it is linear, but the message
/// may be large).
async fn fallback(raw: Arc<Vec<u8>>, over: Over) -> Arc<View> {
    let made = tokio::task::spawn_blocking(move || text_document(&Html::of(&raw), over)).await;
    Arc::new(View::text(
        made.unwrap_or_else(|_| text_document(&Html::default(), over)),
    ))
}

fn cache_key(user: &str, images: Images, raw: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(user.as_bytes());
    hash.update([0, images as u8]);
    hash.update(raw);
    hash.finalize().into()
}

/// A message's HTML body, its text parts among it escaped.
#[derive(Debug, Default)]
struct Html(String);

impl Html {
    fn of(raw: &[u8]) -> Html {
        let parsed = Message::new(raw.to_vec());
        let lists = message::BodyLists::of(&parsed);
        let mut html = String::new();
        for id in &lists.html {
            let Some(part) = parsed.part(*id) else {
                continue;
            };
            let text = parsed.part_text(*id).unwrap_or_default();
            if part.subtype.eq_ignore_ascii_case("html") {
                html.push_str(&text);
            } else {
                html.push_str("<pre>");
                html.push_str(&escape(&text));
                html.push_str("</pre>");
            }
        }
        Html(html)
    }
}

/// The webmail document of the message `raw`, made as an open makes it (without the cache
/// and the deadline): for tests and the fuzz target of the scanner and sanitiser.
pub fn document_of(raw: &[u8]) -> String {
    render(&Html::of(raw), Images::Blocked).document
}

/// The document of `html`: sanitised when it is within every bound, else its text.
fn render(html: &Html, images: Images) -> View {
    if let Err(over) = within_bounds(&html.0) {
        return View::text(text_document(html, over));
    }
    let clean = webmail::sanitize(&html.0, images);
    if clean.html.len() > MAX_OUTPUT {
        return View::text(text_document(html, Over::Output));
    }
    View {
        document: webmail::message_document(&clean.html),
        remote_images: clean.remote_images,
    }
}

/// The document of the HTML's text, with why it is not the HTML itself.
fn text_document(html: &Html, over: Over) -> String {
    webmail::message_document(&format!(
        "<p class=\"mailgate-notice\"><em>This message's HTML {}: shown as text.</em></p><pre>{}</pre>",
        over.reason(),
        escape(&strip_tags(&html.0))
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_over_a_bound_is_shown_as_its_text() {
        let document = render(
            &Html(format!(
                "{}deep{}",
                "<div>".repeat(100_000),
                "</div>".repeat(100_000)
            )),
            Images::Blocked,
        )
        .document;
        assert!(document.contains("nested too deeply"), "{document:.300}");
        assert!(document.contains("<pre>"));
        assert!(document.contains("deep"));
        assert!(!document.contains("<div>"));
        let ordinary = render(
            &Html("<p onclick=\"x()\">Hello <b>you</b></p>".into()),
            Images::Blocked,
        )
        .document;
        assert!(ordinary.contains("<b>you</b>") && !ordinary.contains("onclick"));
        assert!(!ordinary.contains("shown as text"));
    }

    #[test]
    fn the_document_of_a_top_level_alternative_is_its_html_alone() {
        let raw = b"Subject: alt\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nplain words\r\n--A\r\nContent-Type: text/html\r\n\r\n<p>html words</p>\r\n--A--\r\n";
        let document = render(&Html::of(raw), Images::Blocked).document;
        assert!(document.contains("<p>html words</p>"), "{document}");
        assert!(!document.contains("plain words"), "{document}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_open_comes_from_the_cache() {
        let views = Arc::new(HtmlViews::default());
        let raw =
            Arc::new(b"Content-Type: text/html\r\n\r\n<p>cached <i>once</i></p>\r\n".to_vec());
        let open = |user: &'static str, images| views.document(user, raw.clone(), images);
        let first = open("ann@example.org", Images::Blocked).await;
        let second = open("ann@example.org", Images::Blocked).await;
        assert!(first.document.contains("<i>once</i>"), "{first:?}");
        assert!(
            Arc::ptr_eq(&first, &second),
            "the same document, not made again"
        );
        let other = open("bob@example.org", Images::Blocked).await;
        assert!(
            !Arc::ptr_eq(&first, &other),
            "each user has their own entry"
        );
        let shown = open("ann@example.org", Images::Shown).await;
        assert!(
            !Arc::ptr_eq(&first, &shown),
            "images shown or not are two entries"
        );
    }
}
