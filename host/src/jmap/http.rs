//! JMAP's transport: HTTP/1.1 (hyper) over the listener's connection, the routes, and
//! authentication — HTTP Basic with the gateway's users, over TLS only, with the same
//! failed-login budget and delays as IMAP, POP3 and SMTP AUTH. A password that checked out
//! is remembered (as a SHA-256, for a few minutes) so that every request does not cost an
//! argon2 verification.
//!
//! Browsers attach Basic credentials they hold to requests other sites make them send (a
//! form posted cross-site), so: every authenticated request that says it comes from another
//! site (`Origin`, `Sec-Fetch-Site`) is refused, the API takes only `application/json`
//! bodies (a form cannot send one), and a browser is never challenged for Basic credentials
//! (it would remember them): the webmail page logs in by posting its form as JSON for a
//! bearer token. API clients, which send no `Sec-Fetch-*` headers, are still challenged for
//! Basic.

use crate::store::names::UserName;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::api::Problem;
use super::push::{self, Body};
use super::webmail;
use super::Jmap;
use crate::config::Protocol as ProtocolKind;
use crate::mail::Session;
use crate::net::connection::{Client, Stream};

/// A client that has not sent a whole request head this long after it began is dropped
/// (hyper's timer runs from the head's start, whatever trickles in meanwhile).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any request body may take to arrive, besides what its size earns at
/// [`BODY_RATE_FLOOR`]: a deadline from the body's start that moves out only with bytes
/// received, never with time spent waiting.
const BODY_GRACE: Duration = Duration::from_secs(10);
/// Bytes per second a request body (API request or upload) must average after the grace:
/// a 10 MiB request may take 10 s + 160 s, a trickle of a byte a second gets 10 s.
const BODY_RATE_FLOOR: u64 = 64 << 10;
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
    fn issue(&self, user: &UserName) -> Option<String> {
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

    fn revoke(&self, token: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

/// What one HTTP connection knows about its client.
struct Peer {
    /// Counts the connection for the drain; submissions' SMTP sessions are counted from it.
    drain: crate::net::drain::DrainWatch,
    client_id: String,
    peer: std::net::SocketAddr,
    listener: String,
    tls: bool,
    /// Failed logins on this connection: each waits longer.
    failures: AtomicU32,
    /// Until a request of this connection authenticates: its time to do so, counted from the
    /// connection (`limits.login-timeout-secs`), and its place among its address's
    /// connections not logged in (`limits.max-prelogin-connections-per-ip`), as for IMAP.
    login: std::sync::Mutex<Option<crate::net::limits::LoginWindow>>,
    /// Requests answered 401 on this connection.
    refused: AtomicU32,
}

/// Requests a connection that has not authenticated is answered before it is closed.
const MAX_UNAUTHENTICATED_REQUESTS: u32 = 4;

impl Peer {
    fn session(&self, user: &str) -> Session {
        Session::client(
            &self.client_id,
            self.peer,
            &self.listener,
            self.tls,
            None,
            Some(user.to_string()),
        )
    }
}

/// Serves one connection until the client closes it or the server drains.
pub async fn serve(jmap: Arc<Jmap>, mut client: Client) {
    let Some(window) = jmap.shared.login_window(client.peer.ip()) else {
        tracing::debug!(peer = %client.peer, "JMAP: too many connections not logged in");
        return;
    };
    let login_time = window.remaining();
    let stream = std::mem::replace(&mut client.conn.stream, Stream::Upgrading);
    let peer = Arc::new(Peer {
        drain: client.drain.another(),
        client_id: client.id.clone(),
        peer: client.peer,
        listener: client.listener.name.clone(),
        tls: client.tls,
        failures: AtomicU32::new(0),
        login: std::sync::Mutex::new(Some(window)),
        refused: AtomicU32::new(0),
    });
    let watched = peer.clone();
    let service = hyper::service::service_fn(move |request| {
        let (jmap, peer) = (jmap.clone(), peer.clone());
        async move { Ok::<_, Infallible>(answer(&jmap, &peer, request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                tracing::debug!("JMAP connection: {e}");
            }
        }
        () = client.drain.requested() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
        () = login_deadline(&watched, login_time) => {
            tracing::debug!(peer = %watched.peer, "JMAP: no login in time, connection closed");
        }
    }
}

/// Ends when the connection's time to log in has passed without a login; never after one.
async fn login_deadline(peer: &Peer, time: std::time::Duration) {
    tokio::time::sleep(time).await;
    if peer.logged_in() {
        std::future::pending::<()>().await;
    }
}

impl Peer {
    fn logged_in(&self) -> bool {
        self.login
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// A request authenticated: the login window's place is given back.
    fn log_in(&self) {
        self.login.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Routes a request; a connection that has been refused [`MAX_UNAUTHENTICATED_REQUESTS`]
/// times without logging in is closed after this answer.
async fn answer(jmap: &Arc<Jmap>, peer: &Arc<Peer>, request: Request<Incoming>) -> Response<Body> {
    let mut response = route(jmap, peer, request).await;
    if !peer.logged_in() && response.status() == StatusCode::UNAUTHORIZED {
        let refused = peer
            .refused
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if refused >= MAX_UNAUTHENTICATED_REQUESTS {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response
}

async fn route(jmap: &Arc<Jmap>, peer: &Arc<Peer>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/.well-known/jmap") => {
            let user = match authenticate(jmap, peer, &request).await {
                Ok(user) => user,
                Err(refusal) => return refusal,
            };
            let base = base_url(&request, peer);
            json_response(StatusCode::OK, &jmap.session_resource(&user, &base))
        }
        (Method::POST, "/jmap/api" | "/jmap/api/") => {
            if from_another_site(&request, peer) {
                return cross_site();
            }
            if let Err(refusal) = json_body(request.headers()) {
                return refusal;
            }
            let user = match authenticate(jmap, peer, &request).await {
                Ok(user) => user,
                Err(refusal) => return refusal,
            };
            api(jmap, peer, &user, request).await
        }
        (Method::POST, p) if p.starts_with("/jmap/upload/") => {
            let user = match authenticate(jmap, peer, &request).await {
                Ok(user) => user,
                Err(refusal) => return refusal,
            };
            upload(jmap, &user, request).await
        }
        (Method::GET, "/jmap/eventsource" | "/jmap/eventsource/") => {
            let user = match authenticate(jmap, peer, &request).await {
                Ok(user) => user,
                Err(refusal) => return refusal,
            };
            events(jmap, peer, user, &request).await
        }
        (Method::GET, p) if p.starts_with("/jmap/download/") => {
            let user = match authenticate(jmap, peer, &request).await {
                Ok(user) => user,
                Err(refusal) => return refusal,
            };
            download(jmap, peer, &user, &request).await
        }
        (Method::POST, "/jmap/token") => {
            let user = match log_in(jmap, peer, request).await {
                Ok(user) => user,
                Err(mut refusal) => {
                    // The page asks itself: no browser login dialog.
                    refusal.headers_mut().remove(header::WWW_AUTHENTICATE);
                    return refusal;
                }
            };
            match jmap.tokens.issue(&user) {
                Some(token) => json_response(
                    StatusCode::OK,
                    &serde_json::json!({"token": token, "username": user.as_str(), "accountId": Jmap::account_id(&user)}),
                ),
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many sessions, try later\n",
                ),
            }
        }
        (Method::DELETE, "/jmap/token") => {
            if let Some(token) = bearer(&request) {
                jmap.tokens.revoke(token);
            }
            text(StatusCode::OK, "logged out\n")
        }
        (Method::GET, p) if p.starts_with("/webmail/html/") => {
            let user = match authenticate(jmap, peer, &request).await {
                Ok(user) => user,
                Err(refusal) => return refusal,
            };
            let id = p.trim_start_matches("/webmail/html/");
            match jmap.html_view(&user, &peer.session(&user), id).await {
                Some(document) => {
                    let mut response = Response::new(Body::whole(document.as_bytes().to_vec()));
                    let headers = response.headers_mut();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    headers.insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(webmail::MESSAGE_POLICY),
                    );
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    response
                }
                None => text(StatusCode::NOT_FOUND, "no such email\n"),
            }
        }
        (Method::GET, p) if webmail::asset(p).is_some() => page(p),
        (Method::GET, "/favicon.ico") => text(StatusCode::NO_CONTENT, ""),
        (_, "/.well-known/jmap" | "/jmap/api" | "/jmap/api/") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `https://host[:port]` as the client addressed us.
fn base_url(request: &Request<Incoming>, peer: &Peer) -> String {
    let scheme = if peer.tls { "https" } else { "http" };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}")
}

/// One of the webmail page's embedded files, with the page's security headers.
fn page(path: &str) -> Response<Body> {
    let Some((kind, content)) = webmail::asset(path) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let mut response = Response::new(Body::whole(Bytes::from_static(content.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(webmail::PAGE_POLICY),
    );
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The bearer token of a request, if it carries one.
fn bearer(request: &Request<Incoming>) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a request says it was made by a page of another site: its `Sec-Fetch-Site` is
/// neither `same-origin` nor `none` (typed by the user), or its `Origin` is not this server's
/// (`null` included). Clients other than browsers send neither and are not concerned.
fn from_another_site(request: &Request<Incoming>, peer: &Peer) -> bool {
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
fn from_browser(headers: &hyper::HeaderMap) -> bool {
    headers.contains_key("sec-fetch-mode")
        || headers.contains_key("sec-fetch-dest")
        || headers.contains_key("sec-fetch-site")
        || headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

/// The refusal of a request from another site.
fn cross_site() -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        "cross-site request refused: this server's pages alone may send it\n",
    )
}

/// Refuses an API request whose body is not declared `application/json`: the types a form
/// of another site can send (`text/plain`, form encodings) are not taken, even when they
/// hold JSON.
#[allow(clippy::result_large_err)]
fn json_body(headers: &hyper::HeaderMap) -> Result<(), Response<Body>> {
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

/// The user the request's credentials name, or the response that refuses it.
async fn authenticate(
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
        return jmap
            .tokens
            .user(token)
            .inspect(|_| peer.log_in())
            .ok_or_else(|| {
                let mut refusal = text(
                    StatusCode::UNAUTHORIZED,
                    "the session has ended: log in again\n",
                );
                refusal.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"mailgate\""),
                );
                refusal
            });
    }
    let Some((user, password)) = basic_credentials(given) else {
        return Err(unauthorized(request, "malformed Basic credentials\n"));
    };
    check_password(jmap, peer, &user, &password)
        .await
        .inspect(|_| peer.log_in())
        .map_err(|refusal| {
            refusal.unwrap_or_else(|| unauthorized(request, "invalid credentials\n"))
        })
}

/// The webmail page's login (`POST /jmap/token`): `{"username", "password"}` as JSON (or
/// Basic credentials, for clients that have them), from this server's own pages only.
async fn log_in(
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

async fn api(
    jmap: &Jmap,
    peer: &Peer,
    user: &UserName,
    request: Request<Incoming>,
) -> Response<Body> {
    let Ok(_slot) = jmap.request_slot(user).try_acquire_owned() else {
        return problem(&Problem::limit(
            "maxConcurrentRequests",
            "too many requests at once",
        ));
    };
    let limit = jmap.limits.max_size_request;
    let body = match read_body(request.into_body(), limit).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return problem(&Problem::limit(
                "maxSizeRequest",
                format!("the request is over {limit} bytes"),
            ))
        }
        Err(BodyError::TooSlow) => return too_slow(),
        Err(BodyError::Broken) => return text(StatusCode::BAD_REQUEST, "broken request body\n"),
    };
    let caller = super::Caller {
        session: peer.session(user),
        peer: peer.peer,
        drain: &peer.drain,
    };
    match jmap.api(user, &caller, &body).await {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err(refused) => problem(&refused),
    }
}

/// The event source: a task looks at the account every second and streams state events.
async fn events(
    jmap: &Arc<Jmap>,
    peer: &Arc<Peer>,
    user: UserName,
    request: &Request<Incoming>,
) -> Response<Body> {
    let Ok(slot) = jmap.push_slot(&user).try_acquire_owned() else {
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many event sources open for this user\n",
        );
    };
    let options = push::Options::parse(request.uri().query().unwrap_or(""));
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let baseline = jmap.states(&user, &peer.session(&user)).await;
    let (jmap, peer) = (jmap.clone(), peer.clone());
    tokio::spawn(async move {
        let _slot = slot;
        let account_id = Jmap::account_id(&user);
        let session = peer.session(&user);
        let look = || jmap.states(&user, &session);
        let stop = peer.drain.requested();
        push::run(sender, (account_id, options), baseline, look, stop).await;
    });
    let mut response = Response::new(Body::Stream(receiver));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /jmap/upload/{accountId}/`: the body becomes a blob (RFC 8620 §6.1).
async fn upload(jmap: &Jmap, user: &str, request: Request<Incoming>) -> Response<Body> {
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
async fn download(
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
    let mut response = Response::new(Body::whole(bytes));
    let headers = response.headers_mut();
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

/// Why a request body was not taken.
#[derive(Debug, PartialEq, Eq)]
enum BodyError {
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
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
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
fn too_slow() -> Response<Body> {
    let mut response = text(
        StatusCode::REQUEST_TIMEOUT,
        "the request body did not arrive in time\n",
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
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

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::whole(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn problem(problem: &Problem) -> Response<Body> {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json_response(status, &problem.body());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::whole(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%20b%2Fc+d%zz"), "a b/c d%zz");
        assert_eq!(percent_decode("%"), "%");
    }
}
