//! Bounded reading of a message's HTML, which is its sender's input: one linear scan that
//! measures size, nesting depth and elements before html5ever sees the document, and the
//! text of HTML for previews and for what is over a bound.

use std::collections::HashSet;

use super::webmail;

/// HTML nested deeper than this (as the scan counts it, never less than the browser's tree)
/// is shown as text.
pub const MAX_DEPTH: usize = 512;
/// HTML of more elements than this is shown as text.
pub const MAX_ELEMENTS: usize = 100_000;

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
    pub fn reason(self) -> &'static str {
        match self {
            Over::Size | Over::Output => "is too large",
            Over::Depth => "is nested too deeply",
            Over::Elements => "has too many elements",
            Over::Time => "takes too long to prepare",
        }
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
        return strip_tags(start);
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
    unescape_common(&text)
}

/// Text of an HTML document without its tags, scripts and styles: enough for a preview.
/// Linear in the document: it is searched in one lower-cased copy (same byte offsets), from
/// where the last search ended.
pub fn strip_tags(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len());
    let mut at = 0;
    while let Some(found) = html[at..].find('<') {
        let start = at + found;
        out.push_str(&html[at..start]);
        out.push(' ');
        let after = &lower[start..];
        let skip_to = if after.starts_with("<script") {
            after.find("</script>").map(|i| i + 9)
        } else if after.starts_with("<style") {
            after.find("</style>").map(|i| i + 8)
        } else {
            after.find('>').map(|i| i + 1)
        };
        match skip_to {
            Some(n) => at = start + n,
            None => {
                at = html.len();
            }
        }
    }
    out.push_str(&html[at..]);
    unescape_common(&out)
}

/// The text of `html` with the entities a serialiser writes in text decoded (`&amp;` last, so
/// that an escaped entity stays as written).
fn unescape_common(html: &str) -> String {
    html.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
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
    fn html_text_drops_tags_and_scripts() {
        assert_eq!(
            strip_tags("<p>a<script>evil()</script>b &amp; c</p>")
                .split_whitespace()
                .collect::<Vec<_>>(),
            vec!["a", "b", "&", "c"]
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
