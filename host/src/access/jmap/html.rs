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

use super::message;
use super::webmail::{self, Images};
use crate::message::Message;

/// HTML nested deeper than this (as the scan counts it, never less than the browser's tree)
/// is shown as text.
pub const MAX_DEPTH: usize = 512;
/// HTML of more elements than this is shown as text.
pub const MAX_ELEMENTS: usize = 100_000;
/// A sanitised body larger than this is replaced by the text rendering.
pub const MAX_OUTPUT: usize = 8 << 20;
/// How long a request waits for the sanitiser before it answers with the text rendering
/// (the work goes on, and its result is kept for the next open).
const DEADLINE: Duration = Duration::from_secs(5);
/// Documents kept, by total size.
const CACHE_BYTES: usize = 64 << 20;

/// Which of the bounds a message's HTML is over, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Size,
    Depth,
    Elements,
    Output,
    Time,
}

impl Over {
    fn reason(self) -> &'static str {
        match self {
            Over::Size | Over::Output => "is too large",
            Over::Depth => "is nested too deeply",
            Over::Elements => "has too many elements",
            Over::Time => "takes too long to prepare",
        }
    }
}

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

/// HTML read for a preview: its start is enough.
const PREVIEW_SOURCE: usize = 64 << 10;

/// The words of an HTML body as a browser would render them, for a list's preview: parsed
/// (entities decoded; comments, the head, scripts and styles dropped) when its start is
/// within the bounds, else with the tags cut out.
pub fn text_of(html: &str) -> String {
    let mut end = html.len().min(PREVIEW_SOURCE);
    while !html.is_char_boundary(end) {
        end -= 1;
    }
    let start = &html[..end];
    if within_bounds(start).is_err() {
        return message::strip_tags(start);
    }
    let clean_content: HashSet<&str> = ["script", "style", "title", "head", "template"]
        .into_iter()
        .collect();
    // Elements that break a line keep their tags (without attributes), to become spaces.
    let breaks: HashSet<&str> = [
        "p",
        "div",
        "br",
        "li",
        "tr",
        "td",
        "th",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "table",
        "ul",
        "ol",
        "blockquote",
        "pre",
        "hr",
        "section",
        "article",
        "header",
        "footer",
    ]
    .into_iter()
    .collect();
    let cleaned = ammonia::Builder::empty()
        .tags(breaks)
        .clean_content_tags(clean_content)
        .clean(start)
        .to_string();
    // What is left is text (its `<` escaped) and bare tags: each tag becomes a space.
    let mut text = String::with_capacity(cleaned.len());
    let mut in_tag = false;
    for c in cleaned.chars() {
        match (in_tag, c) {
            (false, '<') => in_tag = true,
            (true, '>') => {
                in_tag = false;
                text.push(' ');
            }
            (false, c) => text.push(c),
            (true, _) => {}
        }
    }
    // The serialiser escapes these in text; a preview is text.
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The document of the HTML's text, with why it is not the HTML itself.
fn text_document(html: &Html, over: Over) -> String {
    webmail::message_document(&format!(
        "<p class=\"mailgate-notice\"><em>This message's HTML {}: shown as text.</em></p><pre>{}</pre>",
        over.reason(),
        escape(&message::strip_tags(&html.0))
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Elements with no end tag.
const VOID: [&str; 16] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
    "source", "track", "wbr", "image",
];
/// Elements whose content is text up to their end tag.
const RAW_TEXT: [&str; 9] = [
    "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript",
];
/// Formatting elements: the parser re-opens those an outer end tag closed.
const FORMATTING: [&str; 14] = [
    "a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u",
];
/// Start tags before which the parser does not re-open closed formatting elements (the next
/// text or other start tag does): those that close a `<p>` and these.
const KEEPS_CLOSED_TOO: [&str; 10] = [
    "pre",
    "listing",
    "form",
    "li",
    "dd",
    "dt",
    "plaintext",
    "table",
    "hr",
    "template",
];
/// Start tags that close an open `<p>` (only counted when the `<p>` is the innermost element,
/// where the parser certainly closes it).
const CLOSES_P: [&str; 30] = [
    "address",
    "article",
    "aside",
    "blockquote",
    "center",
    "details",
    "dialog",
    "dir",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "header",
    "hgroup",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "section",
    "summary",
    "ul",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
];

/// Whether a start tag closes the innermost open element first (`<p>` after `<p>`, `<li>`
/// after `<li>`, ...): the cases where the parser's tree is certainly no deeper.
fn closes_innermost(new: &str, innermost: &str) -> bool {
    match innermost {
        "p" => {
            CLOSES_P.contains(&new)
                || matches!(new, "pre" | "form" | "li" | "dd" | "dt" | "listing")
        }
        "li" => new == "li",
        "dd" | "dt" => new == "dd" || new == "dt",
        "option" => new == "option" || new == "optgroup",
        "td" | "th" => matches!(new, "td" | "th" | "tr"),
        "tr" => new == "tr",
        _ => false,
    }
}

/// Measures `html` in one pass against the bounds: its nesting depth as a stack of the tags
/// it opens (an end tag closes up to its match; implied closings only where certain, so the
/// count is never below the depth of the tree a browser builds) and its elements — those the
/// parser makes again included: a formatting element (`<b>`, `<font>`, ...) that an outer end
/// tag closed is re-opened before the next text or start tag, again each time it is closed
/// so (`<p><b>..</p>` then `<p>x</p>` many times makes as many `<b>`s). Stops at the first
/// bound passed, so its work is at most linear in the input times [`MAX_DEPTH`].
pub fn within_bounds(html: &str) -> Result<(), Over> {
    if html.len() > webmail::MAX_HTML {
        return Err(Over::Size);
    }
    // ASCII lower-casing keeps every byte offset.
    let lower = html.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut stack: Vec<String> = Vec::new();
    // Formatting elements closed by an outer end tag: the parser's list of them to re-open.
    let mut reopen: Vec<String> = Vec::new();
    let mut elements = 0usize;
    let mut at = 0;
    while let Some(found) = lower[at..].find('<') {
        let start = at + found;
        if start > at {
            // Text: what was closed is opened again around it.
            elements += reopen.len();
            stack.append(&mut reopen);
        }
        let rest = &lower[start..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            at = comment
                .find("-->")
                .map_or(bytes.len(), |end| start + 4 + end + 3);
            continue;
        }
        let (closing, name_start) = match bytes.get(start + 1) {
            Some(b'/') => (true, start + 2),
            Some(b) if b.is_ascii_alphabetic() => (false, start + 1),
            Some(b'!' | b'?') => {
                at = rest.find('>').map_or(bytes.len(), |end| start + end + 1);
                continue;
            }
            _ => {
                at = start + 1;
                continue;
            }
        };
        let name_end = lower[name_start..]
            .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
            .map_or(bytes.len(), |n| name_start + n);
        let name = &lower[name_start..name_end];
        at = tag_end(bytes, name_end);
        if closing {
            if let Some(open) = stack.iter().rposition(|n| n == name) {
                let closed = stack.split_off(open + 1);
                reopen.extend(
                    closed
                        .into_iter()
                        .filter(|n| FORMATTING.contains(&n.as_str())),
                );
                stack.truncate(open);
            } else if let Some(listed) = reopen.iter().rposition(|n| n == name) {
                // Its own end tag: it is not opened again.
                reopen.remove(listed);
            }
        } else {
            elements += 1;
            if !(CLOSES_P.contains(&name) || KEEPS_CLOSED_TOO.contains(&name)) {
                elements += reopen.len();
                stack.append(&mut reopen);
            }
            while stack.last().is_some_and(|top| closes_innermost(name, top)) {
                stack.pop();
            }
            if RAW_TEXT.contains(&name) {
                let end = format!("</{name}");
                at = lower[at..].find(&end).map_or(bytes.len(), |n| at + n);
            } else if !VOID.contains(&name) {
                stack.push(name.to_string());
            }
        }
        if stack.len() > MAX_DEPTH {
            return Err(Over::Depth);
        }
        if elements > MAX_ELEMENTS {
            return Err(Over::Elements);
        }
    }
    Ok(())
}

/// Where a tag whose name ends at `from` ends: after its `>`, outside quoted attribute values.
fn tag_end(bytes: &[u8], from: usize) -> usize {
    let mut quote = None;
    let mut i = from;
    while let Some(&b) = bytes.get(i) {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), b) if b == q => quote = None,
            (None, b'>') => return i + 1,
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(tag: &str, depth: usize) -> String {
        format!(
            "{}deep{}",
            format!("<{tag}>").repeat(depth),
            format!("</{tag}>").repeat(depth)
        )
    }

    #[test]
    fn the_scan_finds_what_is_over_each_bound() {
        assert_eq!(within_bounds(&nested("div", 100_000)), Err(Over::Depth));
        assert_eq!(within_bounds(&nested("div", MAX_DEPTH)), Ok(()));
        // Unclosed `<div>`s nest as deep as closed ones; stray end tags close nothing.
        assert_eq!(
            within_bounds(&"<div></span>".repeat(MAX_DEPTH + 1)),
            Err(Over::Depth)
        );
        assert_eq!(
            within_bounds(&"<span>x</span>".repeat(MAX_ELEMENTS + 1)),
            Err(Over::Elements)
        );
        // 300 formatting elements closed by `</p>`, then re-opened (and closed) by each of
        // 400 short paragraphs: 120 000 elements for the parser from 3 500 tags.
        let reopened = format!(
            "<p>{}</p>{}",
            (0..300).map(|i| format!("<b id={i}>")).collect::<String>(),
            "<p>x</p>".repeat(400)
        );
        assert_eq!(within_bounds(&reopened), Err(Over::Elements));
        assert_eq!(
            within_bounds(&"x".repeat(webmail::MAX_HTML + 1)),
            Err(Over::Size)
        );
    }

    #[test]
    fn ordinary_html_is_within_bounds() {
        // Paragraphs and list items left open, as old mail often has them.
        let soup = "<p>para<p>para<ul><li>item<li>item</ul><table><tr><td>cell<td>cell<tr><td>cell</table>"
            .repeat(5_000);
        assert_eq!(within_bounds(&soup), Ok(()));
        // Formatting elements closed once and re-opened once are counted once more.
        let once = format!(
            "<p>{}</p><div>x</div>",
            (0..300).map(|i| format!("<b id={i}>")).collect::<String>()
        );
        assert_eq!(within_bounds(&once), Ok(()));
        // A `<font>` left open in the first paragraph, re-opened in each of the others.
        let sloppy = format!("<p><font face=x>first</p>{}", "<p>more</p>".repeat(5_000));
        assert_eq!(within_bounds(&sloppy), Ok(()));
        // Tags inside comments, scripts and quoted attributes are not tags.
        let hidden = format!(
            "<!-- {} --><script>{}</script><a title=\"{}\">x</a>",
            "<div>".repeat(1_000),
            "<div>".repeat(1_000),
            "<div>".repeat(1_000)
        );
        assert_eq!(within_bounds(&hidden), Ok(()));
    }

    #[test]
    fn html_over_a_bound_is_shown_as_its_text() {
        let document = render(&Html(nested("div", 100_000)), Images::Blocked).document;
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

    #[test]
    fn the_text_of_html_has_no_markup() {
        let html = "<html><head><title>Newsletter</title><style>p { color: red }</style></head>\
<body><!-- [if mso]><table><![endif] --><p>Caf&eacute; &amp; <b>bar</b>&nbsp;&lt;3</p>\
<script>evil()</script><div>next&#8217;s</div></body></html>";
        let text = text_of(html);
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words, ["Café", "&", "bar", "<3", "next’s"], "{text:?}");
        // Over the bounds: the tags are cut out all the same.
        let deep = format!("{}deep{}", "<div>".repeat(10_000), "</div>".repeat(10_000));
        assert_eq!(text_of(&deep).trim(), "deep");
    }
}
