//! JMAP's transport: HTTP/1.1 (hyper) over the listener's connection, and the routes.
//! Authentication (HTTP Basic with the gateway's users, over TLS only; the webmail page's
//! bearer tokens) is in [`auth`]; the defences against requests other sites' pages make a
//! browser send in [`origin`]; blob upload and download in [`blobs`]; request bodies under
//! their deadline in [`body`]; the webmail's message frames in [`frame`].
//!
//! Browsers attach Basic credentials they hold to requests other sites make them send (a
//! form posted cross-site), so: every authenticated request that says it comes from another
//! site (`Origin`, `Sec-Fetch-Site`) is refused, the API takes only `application/json`
//! bodies (a form cannot send one), and a browser is never challenged for Basic credentials
//! (it would remember them): the webmail page logs in by posting its form as JSON for a
//! bearer token. API clients, which send no `Sec-Fetch-*` headers, are still challenged for
//! Basic.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::api::Problem;
use super::push::{self, Body};
use super::webmail;
use super::Jmap;
use crate::mail::Session;
use crate::net::connection::{Client, Stream};
use crate::store::names::UserName;
use auth::{authenticate, bearer, log_in};
pub use auth::{LoginCache, Tokens};
use blobs::{download, upload};
use body::{read_body, too_slow, BodyError};
use origin::{cross_site, from_another_site, json_body};
use respond::{json_response, problem, text};

mod auth;
mod blobs;
mod body;
mod frame;
mod origin;
mod respond;

/// A client that has not sent a whole request head this long after it began is dropped
/// (hyper's timer runs from the head's start, whatever trickles in meanwhile).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The users this connection authenticated as, each counting it among their JMAP
    /// connections (`limits.max-connections-per-user`) until it ends.
    users: std::sync::Mutex<Vec<crate::session_context::UserSlot>>,
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
    let window = client.login_window.take();
    let Some(window) = window.or_else(|| jmap.shared.login_window(client.peer.ip())) else {
        tracing::debug!(peer = %client.peer, "JMAP: too many connections not logged in");
        return;
    };
    let login_time = window.remaining();
    let stall = client.conn.write_stall();
    let stream = std::mem::replace(&mut client.conn.stream, Stream::Upgrading);
    // hyper has no write deadline: a client that never reads a download would hold it.
    let stream = crate::net::connection::StallGuard::new(stream, stall);
    let peer = Arc::new(Peer {
        drain: client.drain.another(),
        client_id: client.id.clone(),
        peer: client.peer,
        listener: client.listener.name.clone(),
        tls: client.tls,
        failures: AtomicU32::new(0),
        login: std::sync::Mutex::new(Some(window)),
        refused: AtomicU32::new(0),
        users: std::sync::Mutex::new(Vec::new()),
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

    /// A request authenticated as `user`: the connection counts among the user's JMAP
    /// connections (once), and the login window's place is given back. Refused (429) when the
    /// user holds `limits.max-connections-per-user` of them already: the connection then stays
    /// as it was, not logged in.
    // The refusal is the response itself, built once per refused login: boxing it would only
    // move it.
    #[allow(clippy::result_large_err)]
    fn log_in(&self, jmap: &Jmap, user: &UserName) -> Result<(), Response<Body>> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if !users.iter().any(|slot| &slot.key().1 == user) {
            let slot = jmap
                .shared
                .user_slot(crate::config::Protocol::Jmap, user)
                .map_err(|_| {
                    problem(&Problem::too_many_for_user(
                        "maxConnectionsPerUser",
                        "too many connections for this user",
                    ))
                })?;
            users.push(slot);
        }
        drop(users);
        self.login.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
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
        (Method::GET, p) if p.starts_with("/webmail/html/") || p.starts_with("/webmail/view/") => {
            let user = match authenticate(jmap, peer, &request).await {
                Ok(user) => user,
                Err(refusal) => return refusal,
            };
            if p.starts_with("/webmail/view/") {
                frame::view(jmap, peer, &user, &request).await
            } else {
                frame::html(jmap, peer, &user, &request).await
            }
        }
        (Method::GET, p) if p.starts_with("/webmail/frame/") => {
            frame::frame(jmap, peer, &request).await
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
        return problem(&Problem::too_many_for_user(
            "maxEventSourcesPerUser",
            "too many event sources open for this user",
        ));
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
