//! Authentication of JMAP requests: HTTP Basic with the gateway's users (over TLS only, with
//! the same failed-login budget and delays as IMAP, POP3 and SMTP AUTH), the webmail page's
//! bearer tokens, and checked passwords remembered (as a SHA-256, for a few minutes) so that
//! every request does not cost an argon2 verification.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::body::{read_body, too_slow, BodyError};
use super::origin::{cross_site, from_another_site, from_browser, json_body};
use super::respond::text;
use super::Peer;
use crate::access::jmap::push::Body;
use crate::access::jmap::Jmap;
use crate::config::Protocol as ProtocolKind;
use crate::store::names::UserName;

/// How long a checked password is taken without asking argon2 again.
const LOGIN_MEMORY: Duration = Duration::from_secs(300);
/// Remembered logins kept at most (then forgotten all at once).
const LOGIN_MEMORY_MAX: usize = 10_000;

/// Passwords that checked out recently: user -> (SHA-256 of the password, when).
#[derive(Default)]
pub struct LoginCache(Mutex<HashMap<String, ([u8; 32], Instant)>>);

impl LoginCache {
    fn knows(&self, user: &str, digest: &[u8; 32]) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(user)
            .is_some_and(|(d, at)| d == digest && at.elapsed() < LOGIN_MEMORY)
    }

    fn remember(&self, user: &str, digest: [u8; 32]) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= LOGIN_MEMORY_MAX {
            map.clear();
        }
        map.insert(user.to_string(), (digest, Instant::now()));
    }
}

/// How long a webmail token is good for.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Tokens held at most; expired ones go first.
const TOKENS_MAX: usize = 100_000;

/// Bearer tokens handed to the webmail page for a Basic login: token -> (user, expiry).
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<String, (UserName, Instant)>>);

impl Tokens {
    /// A new token for `user`: 32 random bytes, URL-safe base64.
    pub(super) fn issue(&self, user: &UserName) -> Option<String> {
        let mut bytes = [0u8; 32];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut bytes)
            .ok()?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= TOKENS_MAX {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= TOKENS_MAX {
                return None;
            }
        }
        map.insert(
            token.clone(),
            (user.clone(), Instant::now() + TOKEN_LIFETIME),
        );
        Some(token)
    }

    fn user(&self, token: &str) -> Option<UserName> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(token)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(user, _)| user.clone())
    }

    pub(super) fn revoke(&self, token: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

/// The bearer token of a request, if it carries one.
pub(super) fn bearer(request: &Request<Incoming>) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The user the request's credentials name, or the response that refuses it.
pub(super) async fn authenticate(
    jmap: &Jmap,
    peer: &Peer,
    request: &Request<Incoming>,
) -> Result<UserName, Response<Body>> {
    if from_another_site(request, peer) {
        return Err(cross_site());
    }
    let Some(given) = request.headers().get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            request,
            "log in with HTTP Basic authentication\n",
        ));
    };
    if !peer.tls {
        return Err(text(
            StatusCode::FORBIDDEN,
            "credentials are only taken over HTTPS\n",
        ));
    }
    if let Some(token) = bearer(request) {
        let user = jmap.tokens.user(token).ok_or_else(|| {
            let mut refusal = text(
                StatusCode::UNAUTHORIZED,
                "the session has ended: log in again\n",
            );
            refusal.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mailgate\""),
            );
            refusal
        })?;
        peer.log_in(jmap, &user)?;
        return Ok(user);
    }
    let Some((user, password)) = basic_credentials(given) else {
        return Err(unauthorized(request, "malformed Basic credentials\n"));
    };
    let user = check_password(jmap, peer, &user, &password)
        .await
        .map_err(|refusal| {
            refusal.unwrap_or_else(|| unauthorized(request, "invalid credentials\n"))
        })?;
    peer.log_in(jmap, &user)?;
    Ok(user)
}

/// The webmail page's login (`POST /jmap/token`): `{"username", "password"}` as JSON (or
/// Basic credentials, for clients that have them), from this server's own pages only.
pub(super) async fn log_in(
    jmap: &Jmap,
    peer: &Peer,
    request: Request<Incoming>,
) -> Result<UserName, Response<Body>> {
    if request.headers().contains_key(header::AUTHORIZATION) {
        return authenticate(jmap, peer, &request).await;
    }
    if from_another_site(&request, peer) {
        return Err(cross_site());
    }
    json_body(request.headers())?;
    if !peer.tls {
        return Err(text(
            StatusCode::FORBIDDEN,
            "credentials are only taken over HTTPS\n",
        ));
    }
    let body = match read_body(request.into_body(), LOGIN_BODY_MAX).await {
        Ok(body) => body,
        Err(BodyError::TooSlow) => return Err(too_slow()),
        Err(_) => return Err(text(StatusCode::BAD_REQUEST, "malformed login\n")),
    };
    let form: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(user), Some(password)) = (form["username"].as_str(), form["password"].as_str())
    else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "the login is {\"username\", \"password\"}\n",
        ));
    };
    check_password(jmap, peer, user, password)
        .await
        .map_err(|refusal| {
            refusal.unwrap_or_else(|| text(StatusCode::UNAUTHORIZED, "invalid credentials\n"))
        })
}

/// The largest login body taken.
const LOGIN_BODY_MAX: usize = 4096;

/// Checks a user's password with the failed-login budget: the user, or the refusal (`None`:
/// wrong credentials, the caller says so in its own way).
async fn check_password(
    jmap: &Jmap,
    peer: &Peer,
    user: &str,
    password: &str,
) -> Result<UserName, Option<Response<Body>>> {
    let shared = &jmap.shared;
    if !shared.login_allowed(peer.peer.ip()) {
        return Err(Some(text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from your address, try later\n",
        )));
    }
    if !shared.users.available() {
        return Err(Some(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "authentication temporarily unavailable, try later\n",
        )));
    }
    let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    if let Ok(name) = UserName::parse(user) {
        if jmap.logins.knows(&name, &digest) {
            return Ok(name);
        }
    }
    if let Some(name) = shared
        .verify_password(ProtocolKind::Jmap, user, password.to_string())
        .await
    {
        jmap.logins.remember(&name, digest);
        tracing::info!(user = %name, "JMAP login");
        return Ok(name);
    }
    let failures = peer
        .failures
        .fetch_add(1, Ordering::Relaxed)
        .saturating_add(1);
    // Waits longer with each failure of this connection, as the other protocols do.
    shared.login_failed(peer.peer.ip(), user, failures).await;
    Err(None)
}

/// `Basic base64(user:password)`.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// 401, challenging API clients for Basic credentials; a browser is challenged for a bearer
/// token instead, which it cannot answer by itself: no login dialog, no remembered password
/// that other sites' pages could then make it send.
fn unauthorized(request: &Request<Incoming>, body: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::UNAUTHORIZED, body);
    let challenge = if from_browser(request.headers()) {
        "Bearer realm=\"mailgate\""
    } else {
        "Basic realm=\"mailgate\", charset=\"UTF-8\""
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded_and_other_schemes_refused() {
        let header = |v: &str| HeaderValue::from_str(v).expect("header");
        let encoded = base64::engine::general_purpose::STANDARD.encode("ann@localhost:pa:ss");
        assert_eq!(
            basic_credentials(&header(&format!("Basic {encoded}"))),
            Some(("ann@localhost".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials(&header("Bearer abc")), None);
        assert_eq!(basic_credentials(&header("Basic !!!")), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("ann");
        assert_eq!(
            basic_credentials(&header(&format!("Basic {no_colon}"))),
            None
        );
    }
}
