//! Requests that other sites' pages make a browser send: told apart by `Origin` and
//! `Sec-Fetch-*`, refused, and kept from the API by taking only JSON bodies.

use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};

use super::respond::{problem, text};
use super::{base_url, Peer};
use crate::access::jmap::api::Problem;
use crate::access::jmap::push::Body;

/// Whether a request says it was made by a page of another site: its `Sec-Fetch-Site` is
/// neither `same-origin` nor `none` (typed by the user), or its `Origin` is not this server's
/// (`null` included). Clients other than browsers send neither and are not concerned.
pub(super) fn from_another_site(request: &Request<Incoming>, peer: &Peer) -> bool {
    foreign(request.headers(), &base_url(request, peer))
}

/// [`from_another_site`] for the request's headers and this server's origin as addressed.
fn foreign(headers: &hyper::HeaderMap, ours: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return true;
        }
    }
    match headers.get(header::ORIGIN) {
        Some(origin) => !same_origin(origin.to_str().unwrap_or(""), ours),
        None => false,
    }
}

/// `https://host[:port]` equal to `ours`, the default port written or not.
fn same_origin(origin: &str, ours: &str) -> bool {
    let normal = |o: &str| {
        let o = o.trim_end_matches('/').to_ascii_lowercase();
        o.strip_suffix(":443")
            .filter(|rest| rest.starts_with("https://"))
            .or_else(|| {
                o.strip_suffix(":80")
                    .filter(|rest| rest.starts_with("http://"))
            })
            .map_or(o.clone(), str::to_string)
    };
    normal(origin) == normal(ours)
}

/// Whether the request comes from a browser: browsers send `Sec-Fetch-*` headers with every
/// request (and ask for HTML when they navigate); API clients do neither.
pub(super) fn from_browser(headers: &hyper::HeaderMap) -> bool {
    headers.contains_key("sec-fetch-mode")
        || headers.contains_key("sec-fetch-dest")
        || headers.contains_key("sec-fetch-site")
        || headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

/// The refusal of a request from another site.
pub(super) fn cross_site() -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        "cross-site request refused: this server's pages alone may send it\n",
    )
}

/// Refuses an API request whose body is not declared `application/json`: the types a form
/// of another site can send (`text/plain`, form encodings) are not taken, even when they
/// hold JSON.
#[allow(clippy::result_large_err)]
pub(super) fn json_body(headers: &hyper::HeaderMap) -> Result<(), Response<Body>> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = given.as_deref().map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if essence.as_deref() == Some("application/json") {
        return Ok(());
    }
    let detail = match given {
        Some(t) => format!("the request's Content-Type must be application/json, not {t:?}"),
        None => "the request's Content-Type must be application/json (none was given)".into(),
    };
    Err(problem(&Problem::not_json(detail)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> hyper::HeaderMap {
        let mut map = hyper::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn requests_from_other_sites_are_told_apart() {
        let ours = "https://mail.example.org";
        assert!(
            !foreign(&headers(&[]), ours),
            "API clients send neither header"
        );
        assert!(!foreign(
            &headers(&[
                ("origin", "https://mail.example.org"),
                ("sec-fetch-site", "same-origin")
            ]),
            ours
        ));
        assert!(!foreign(
            &headers(&[("origin", "https://MAIL.example.org:443")]),
            ours
        ));
        assert!(!foreign(&headers(&[("sec-fetch-site", "none")]), ours));
        for pairs in [
            &[("origin", "https://evil.example")][..],
            &[("origin", "null")][..],
            &[("origin", "http://mail.example.org")][..],
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")][..],
            &[
                ("origin", "https://mail.example.org"),
                ("sec-fetch-site", "cross-site"),
            ][..],
        ] {
            assert!(foreign(&headers(pairs), ours), "{pairs:?}");
        }
    }

    #[test]
    fn only_json_bodies_reach_the_api() {
        assert!(json_body(&headers(&[("content-type", "application/json")])).is_ok());
        assert!(json_body(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )]))
        .is_ok());
        for refused in [
            &[("content-type", "text/plain")][..],
            &[("content-type", "application/x-www-form-urlencoded")][..],
            &[("content-type", "multipart/form-data; boundary=x")][..],
            &[][..],
        ] {
            let answer = json_body(&headers(refused)).expect_err("refused");
            assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn browsers_are_never_challenged_for_basic_credentials() {
        assert!(from_browser(&headers(&[("sec-fetch-mode", "navigate")])));
        assert!(from_browser(&headers(&[(
            "accept",
            "text/html,application/xhtml+xml"
        )])));
        assert!(!from_browser(&headers(&[("accept", "*/*")])));
    }
}
