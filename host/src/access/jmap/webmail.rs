//! The webmail page: three static files embedded in the binary (no build step), served by the
//! JMAP listener at `/`, talking JMAP only; and what the page cannot do safely by itself —
//! a message's HTML, sanitised here with ammonia (no scripts, event handlers, `javascript:`
//! links, style sheets, and remote images only when the reader asks for them) and served
//! to a sandboxed frame by a short-lived ticket (see `frames`), under a
//! Content-Security-Policy of its own.
//!
//! A message's document gets its own policy (not the page's, as a `srcdoc` frame would): it
//! may use inline styles (the sanitiser keeps only allowed properties) and, when the reader
//! asked to see images, load them from the web; nothing else. Its links open in a new
//! tab (`target=_blank`, `rel=noopener noreferrer`, popups escaping the sandbox), never in
//! the frame or the page.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The page's own policy: its script and style, JMAP on the same origin, nothing else.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; connect-src 'self'; frame-src 'self'; form-action 'none'; \
base-uri 'none'; frame-ancestors 'none'";

/// The policy of a sanitised message, remote images blocked: a sandbox with no scripts
/// whose links may open new tabs outside it, inline styles only, images only from `data:`
/// URLs (the sanitiser removes every other image source anyway).
pub const MESSAGE_POLICY: &str = "sandbox allow-popups allow-popups-to-escape-sandbox; \
default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'; \
base-uri 'none'; frame-ancestors 'self'";

/// [`MESSAGE_POLICY`] for a message whose reader asked to see its images.
pub const MESSAGE_POLICY_WITH_IMAGES: &str =
    "sandbox allow-popups allow-popups-to-escape-sandbox; \
default-src 'none'; img-src data: http: https:; style-src 'unsafe-inline'; form-action 'none'; \
base-uri 'none'; frame-ancestors 'self'";

/// HTML above this size is shown as text instead (the sanitiser's work grows with it; the
/// other bounds are in `html.rs`).
pub const MAX_HTML: usize = 4 << 20;

/// Whether a message's remote images are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Images {
    /// Removed (the default: an image loaded tells the sender the message was read).
    Blocked,
    /// Kept, for a reader who asked ("show images", or "always" for the sender).
    Shown,
}

impl Images {
    /// The frame's policy for the document.
    pub fn policy(self) -> &'static str {
        match self {
            Images::Blocked => MESSAGE_POLICY,
            Images::Shown => MESSAGE_POLICY_WITH_IMAGES,
        }
    }
}

/// A message's HTML made safe, and how many remote images it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clean {
    pub html: String,
    /// Remote (`http:`/`https:`) image sources: removed when images are blocked.
    pub remote_images: usize,
}

/// An embedded file: its type and content.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    Some(match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_str!("webmail/index.html"),
        ),
        "/app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("webmail/app.js"),
        ),
        "/style.css" => ("text/css; charset=utf-8", include_str!("webmail/style.css")),
        _ => return None,
    })
}

/// Attributes of old-style HTML mail (tables laid out with them) kept besides ammonia's
/// defaults: none of them takes a URL.
const LAYOUT_ATTRIBUTES: [(&str, &[&str]); 8] = [
    (
        "table",
        &["width", "border", "cellpadding", "cellspacing", "bgcolor"],
    ),
    ("td", &["width", "height", "valign", "bgcolor", "nowrap"]),
    ("th", &["width", "height", "valign", "bgcolor", "nowrap"]),
    ("tr", &["valign", "bgcolor"]),
    ("font", &["color", "face", "size"]),
    ("div", &["align"]),
    ("p", &["align"]),
    ("img", &["border"]),
];

/// A message's HTML made safe to show: ammonia's allow-list of tags and attributes, inline
/// styles of [`STYLE_PROPERTIES`] only (see [`clean_style`]), links only to http, https and
/// mailto (opening in a new tab, without referrer), images only when they are `data:` URLs,
/// or also `http:`/`https:` when `images` is [`Images::Shown`].
pub fn sanitize(html: &str, images: Images) -> Clean {
    // `data:` for inline images only (links to it are dropped below).
    let schemes: HashSet<&str> = ["http", "https", "mailto", "data"].into_iter().collect();
    let remote = Arc::new(AtomicUsize::new(0));
    let counted = remote.clone();
    let mut builder = ammonia::Builder::default();
    builder
        .url_schemes(schemes)
        .link_rel(Some("noopener noreferrer"))
        .add_tags(["font"])
        // A document's title is not part of what it shows.
        .add_clean_content_tags(["title"])
        .add_generic_attributes(["style"])
        .set_tag_attribute_value("a", "target", "_blank")
        .set_tag_attribute_value("img", "referrerpolicy", "no-referrer")
        .attribute_filter(move |element, attribute, value| {
            filter_attribute(element, attribute, value, images, &counted)
        });
    for (tag, attributes) in LAYOUT_ATTRIBUTES {
        builder.add_tag_attributes(tag, attributes.iter().copied());
    }
    let html = builder.clean(html).to_string();
    Clean {
        html,
        remote_images: remote.load(Ordering::Relaxed),
    }
}

/// What the sanitiser keeps of one allowed attribute (`None`: nothing).
fn filter_attribute<'v>(
    element: &str,
    attribute: &str,
    value: &'v str,
    images: Images,
    remote_images: &AtomicUsize,
) -> Option<Cow<'v, str>> {
    let lower = value.trim_start().to_ascii_lowercase();
    match (element, attribute) {
        ("img", "src") if lower.starts_with("data:") => Some(value.into()),
        ("img", "src") if lower.starts_with("http:") || lower.starts_with("https:") => {
            remote_images.fetch_add(1, Ordering::Relaxed);
            (images == Images::Shown).then(|| value.into())
        }
        // Other image sources (and sets of them, which the switch does not cover) go.
        (_, "src" | "srcset" | "background" | "poster") => None,
        (_, "href") if lower.starts_with("data:") => None,
        (_, "style") => clean_style(value).map(Cow::Owned),
        ("a", "target") => Some(Cow::Borrowed("_blank")),
        _ => Some(value.into()),
    }
}

/// CSS properties an inline style may set: text, colour, box and table layout. None of them
/// takes a URL, places an element outside its box (`position`, `transform`) or hides the
/// frame's link bar.
pub const STYLE_PROPERTIES: [&str; 54] = [
    "color",
    "background-color",
    "font",
    "font-family",
    "font-size",
    "font-style",
    "font-variant",
    "font-weight",
    "line-height",
    "letter-spacing",
    "word-spacing",
    "text-align",
    "text-decoration",
    "text-indent",
    "text-transform",
    "white-space",
    "vertical-align",
    "direction",
    "display",
    "width",
    "min-width",
    "max-width",
    "height",
    "min-height",
    "max-height",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "border",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-color",
    "border-style",
    "border-width",
    "border-radius",
    "border-collapse",
    "border-spacing",
    "table-layout",
    "list-style-type",
    "float",
    "clear",
    "overflow",
    "text-overflow",
    "word-break",
    "overflow-wrap",
];

/// CSS functions a value may call: colours only (`url()`, `image-set()`, `var()`, `env()`,
/// `expression()` and the rest are refused with their declaration).
const STYLE_FUNCTIONS: [&str; 4] = ["rgb", "rgba", "hsl", "hsla"];

/// A style attribute reduced to its declarations of allowed properties whose values are
/// plain: letters, digits, quotes, `#%.,-+/!` and spaces, calling colour functions only, no
/// escapes (which could spell `url`), no comments. `None` when nothing is left.
pub fn clean_style(style: &str) -> Option<String> {
    let kept: Vec<String> = declarations(style)
        .filter_map(|declaration| {
            let (property, value) = declaration.split_once(':')?;
            let property = property.trim().to_ascii_lowercase();
            let value = value.trim();
            (STYLE_PROPERTIES.contains(&property.as_str()) && plain_value(value))
                .then(|| format!("{property}: {value}"))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// The declarations of a style attribute: split at `;` outside quotes and parentheses.
fn declarations(style: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut depth, mut quote) = (0, 0usize, None);
    for (i, c) in style.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => depth = depth.saturating_add(1),
            (None, ')') => depth = depth.saturating_sub(1),
            (None, ';') if depth == 0 => {
                parts.push(&style[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&style[start..]);
    parts.into_iter().filter(|d| !d.trim().is_empty())
}

/// Whether a declaration's value is plain (see [`clean_style`]).
fn plain_value(value: &str) -> bool {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || " \t#%.,-+/!'\"()_".contains(c) || !c.is_ascii();
    if value.is_empty() || value.contains("/*") || !value.chars().all(allowed) {
        return false;
    }
    // Every `(` follows the name of an allowed function.
    let mut rest = value;
    while let Some(open) = rest.find('(') {
        let name_start = rest[..open]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .map_or(0, |i| i + 1);
        let name = rest[name_start..open].to_ascii_lowercase();
        if !STYLE_FUNCTIONS.contains(&name.as_str()) {
            return false;
        }
        rest = &rest[open + 1..];
    }
    true
}

/// The frame's base style: a readable sans-serif text, images and tables kept within the
/// width, and a bar at the bottom that shows where the link under the pointer goes (the
/// frame runs no script, so the page cannot show it).
const BASE_STYLE: &str = "html{color-scheme:light}\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;\
font-size:15px;line-height:1.5;color:#1f2328;background:#fff;margin:12px 16px 32px;\
overflow-wrap:anywhere}\
img{max-width:100%;height:auto}table{max-width:100%}\
pre{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}\
blockquote{margin:0 0 0 .5em;padding-left:.8em;border-left:3px solid #c8d1dc;color:#4b5563}\
a{color:#0b57d0}\
a[href]:hover::after,a[href]:focus::after{content:attr(href);position:fixed;left:0;bottom:0;\
max-width:calc(100% - 16px);overflow:hidden;text-overflow:ellipsis;white-space:nowrap;\
background:#1f2328;color:#fff;font:12px/1.6 system-ui,sans-serif;padding:2px 8px;\
border-top-right-radius:4px;z-index:2147483647;pointer-events:none}\
.mailgate-notice{color:#666}";

/// The document the frame shows: a body already made safe (sanitised, or escaped text) with
/// the base style; no referrer leaves it.
pub fn message_document(clean: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<style>{BASE_STYLE}</style></head><body>{clean}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_html_loses_everything_active_and_keeps_its_text() {
        let hostile = r#"<p onclick="steal()">Readable <b>text</b></p>
<script>window.parent.pwned = 1</script>
<img src="http://tracker.example/pixel.png" onerror="alert(1)">
<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline">
<a href="javascript:alert(1)">bad link</a> <a href="https://example.org/">good link</a>
<a href="data:text/html,<script>alert(1)</script>">data link</a>
<div style="width: expression(alert(1)); background: url(http://tracker.example/bg)">styled</div>
<style>body { background: url(http://tracker.example/css) }</style><title>Hidden title</title>
<iframe src="http://tracker.example/frame"></iframe><form action="http://x"><input></form>"#;
        let clean = sanitize(hostile, Images::Blocked).html;
        for gone in [
            "script",
            "onclick",
            "onerror",
            "javascript:",
            "tracker.example",
            "expression",
            "iframe",
            "<form",
            "url(",
            "width:",
            "Hidden title",
        ] {
            assert!(!clean.contains(gone), "{gone} left in {clean}");
        }
        for kept in [
            "Readable",
            "<b>text</b>",
            "data:image/png",
            "https://example.org/",
            "styled",
        ] {
            assert!(clean.contains(kept), "{kept} lost from {clean}");
        }
        assert!(clean.contains("rel=\"noopener noreferrer\""), "{clean}");
    }

    #[test]
    fn deeply_nested_html_is_cleaned_without_overflowing_the_stack() {
        let depth = 20_000;
        let html = format!("{}deep{}", "<div>".repeat(depth), "</div>".repeat(depth));
        let clean = sanitize(&html, Images::Blocked).html;
        assert!(clean.contains("deep"));
    }

    #[test]
    fn links_open_in_a_new_tab_without_referrer() {
        let clean = sanitize(
            r#"<a href="https://example.org/a">plain</a> <a href="https://example.org/b" target="_top">top</a> <a href="https://example.org/c" target="frame1" rel="opener">named</a>"#,
            Images::Blocked,
        )
        .html;
        assert_eq!(clean.matches("target=\"_blank\"").count(), 3, "{clean}");
        assert_eq!(
            clean.matches("rel=\"noopener noreferrer\"").count(),
            3,
            "{clean}"
        );
        for gone in ["_top", "frame1", "\"opener\""] {
            assert!(!clean.contains(gone), "{gone} left in {clean}");
        }
    }

    #[test]
    fn remote_images_are_counted_and_kept_only_when_shown() {
        let html = r#"<p>Hi</p><img src="https://img.example/a.png"><img src="http://img.example/b.png" srcset="https://img.example/c.png 2x"><img src="data:image/png;base64,iVBORw0KGgo="><img src="cid:part1">"#;
        let blocked = sanitize(html, Images::Blocked);
        assert_eq!(blocked.remote_images, 2);
        assert!(!blocked.html.contains("img.example"), "{}", blocked.html);
        assert!(blocked.html.contains("data:image/png"));
        let shown = sanitize(html, Images::Shown);
        assert_eq!(shown.remote_images, 2);
        assert!(
            shown.html.contains("src=\"https://img.example/a.png\""),
            "{}",
            shown.html
        );
        assert!(shown.html.contains("src=\"http://img.example/b.png\""));
        assert!(
            !shown.html.contains("srcset"),
            "sets are not loaded: {}",
            shown.html
        );
        assert!(!shown.html.contains("cid:"));
        assert_eq!(
            shown.html.matches("referrerpolicy=\"no-referrer\"").count(),
            4,
            "{}",
            shown.html
        );
    }

    #[test]
    fn safe_inline_styles_survive_and_the_rest_goes() {
        let clean = sanitize(
            r#"<p style="color: #c00; font-weight: bold; position: fixed; top: 0">kept</p><td style="background-color: rgb(1, 2, 3); padding: 4px 8px">cell</td>"#,
            Images::Blocked,
        )
        .html;
        assert!(
            clean.contains(r#"style="color: #c00; font-weight: bold""#),
            "{clean}"
        );
        assert!(
            !clean.contains("position") && !clean.contains("top:"),
            "{clean}"
        );
        assert_eq!(
            clean_style("background-color: rgb(1, 2, 3); padding: 4px 8px").as_deref(),
            Some("background-color: rgb(1, 2, 3); padding: 4px 8px")
        );
    }

    #[test]
    fn styles_that_could_load_or_run_anything_are_refused() {
        for hostile in [
            "background: url(http://t.example/x)",
            "background-color: url(http://t.example/x)",
            "color: red; background-image: url('http://t.example/x')",
            "font-family: \\75 rl(http://t.example/x)",
            "width: expression(alert(1))",
            "color: var(--x)",
            "color: image-set('http://t.example/x' 1x)",
            "color: red /* */",
            "list-style-image: url(x)",
            "behavior: url(x.htc)",
            "-moz-binding: url(x)",
            "position: absolute",
            "color: <script>",
            "font-family: 'a;b:c' ; x: y",
        ] {
            let kept = clean_style(hostile).unwrap_or_default();
            for gone in [
                "url",
                "expression",
                "var(",
                "image-set",
                "/*",
                "position",
                "<",
                "\\",
                "x: y",
            ] {
                assert!(!kept.contains(gone), "{gone} kept of {hostile:?}: {kept:?}");
            }
        }
        assert_eq!(
            clean_style("color: red; position: absolute").as_deref(),
            Some("color: red")
        );
        assert_eq!(
            clean_style("font-family: \"A;color:red\", sans-serif; color: blue").as_deref(),
            Some("color: blue"),
            "a semicolon in a quoted name does not make a declaration of its own"
        );
    }

    #[test]
    fn the_document_has_a_readable_base_style_and_no_referrer() {
        let document = message_document("<p>x</p>");
        assert!(document.contains("font-family:system-ui"), "{document}");
        assert!(document.contains("<meta name=\"referrer\" content=\"no-referrer\">"));
        assert!(MESSAGE_POLICY.contains("img-src data:;"));
        assert!(!MESSAGE_POLICY.contains("http"));
        for policy in [MESSAGE_POLICY, MESSAGE_POLICY_WITH_IMAGES] {
            assert!(policy.contains("allow-popups-to-escape-sandbox"));
            assert!(!policy.contains("allow-scripts") && !policy.contains("allow-same-origin"));
            assert!(!policy.contains("script-src"));
            assert!(policy.contains("default-src 'none'"));
        }
    }

    #[test]
    fn the_embedded_page_is_there() {
        let (kind, page) = asset("/").expect("index");
        assert!(kind.starts_with("text/html"));
        assert!(page.contains("app.js"));
        assert!(asset("/app.js").is_some() && asset("/style.css").is_some());
        assert!(asset("/../secret").is_none());
    }
}
