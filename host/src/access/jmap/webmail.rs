//! The webmail page: three static files embedded in the binary (no build step), served by the
//! JMAP listener at `/`, talking JMAP only; and what the page cannot do safely by itself —
//! a message's HTML, sanitised here with ammonia (no scripts, event handlers, `javascript:`
//! links, styles or remote images) for the page to show in a sandboxed frame, under a
//! Content-Security-Policy that lets nothing load from elsewhere.

use std::borrow::Cow;
use std::collections::HashSet;

/// The page's own policy: its script and style, JMAP on the same origin, nothing else.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data: blob:; connect-src 'self'; frame-src 'self'; form-action 'none'; \
base-uri 'none'; frame-ancestors 'none'";

/// The policy of a sanitised message: a sandbox with no scripts, inline styles only, images
/// only from `data:` URLs (the sanitiser removes every other image source anyway).
pub const MESSAGE_POLICY: &str =
    "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'";

/// HTML above this size is shown as text instead (the sanitiser's work grows with it; the
/// other bounds are in `html.rs`).
pub const MAX_HTML: usize = 4 << 20;

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

/// A message's HTML made safe to show: ammonia's allow-list of tags and attributes, links
/// only to http, https and mailto (opening elsewhere, without referrer), images only when
/// they are `data:` URLs.
pub fn sanitize(html: &str) -> String {
    // `data:` for inline images only (links to it are dropped below).
    let schemes: HashSet<&str> = ["http", "https", "mailto", "data"].into_iter().collect();
    ammonia::Builder::default()
        .url_schemes(schemes)
        .link_rel(Some("noopener noreferrer"))
        .add_tag_attributes("a", ["target"])
        .attribute_filter(|element, attribute, value| match (element, attribute) {
            // Remote images would tell the sender the message was opened.
            (_, "src" | "srcset" | "background" | "poster")
                if !value.trim_start().to_ascii_lowercase().starts_with("data:") =>
            {
                None
            }
            ("a", "target") => Some(Cow::Borrowed("_blank")),
            (_, "href") if value.trim_start().to_ascii_lowercase().starts_with("data:") => None,
            _ => Some(value.into()),
        })
        .clean(html)
        .to_string()
}

/// The document the page puts in its frame: a body already made safe (sanitised, or escaped
/// text) with a small base style.
pub fn message_document(clean: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
<style>body{{font-family:sans-serif;margin:0.5em;overflow-wrap:anywhere}}img{{max-width:100%}}</style>\
</head><body>{clean}</body></html>"
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
<style>body { background: url(http://tracker.example/css) }</style>
<iframe src="http://tracker.example/frame"></iframe><form action="http://x"><input></form>"#;
        let clean = sanitize(hostile);
        for gone in [
            "script",
            "onclick",
            "onerror",
            "javascript:",
            "tracker.example",
            "expression",
            "iframe",
            "<form",
            "style=",
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
        let clean = sanitize(&html);
        assert!(clean.contains("deep"));
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
