//! The webmail's message frames: `GET /webmail/view/{email}?images=1` (authenticated) gives
//! the page a ticket URL for the frame and the count of the email's remote images;
//! `GET /webmail/frame/{ticket}` is the frame's own load: the sanitised document under
//! the message policy (remote images allowed only when the ticket says so). The older
//! `GET /webmail/html/{email}` (authenticated) still answers the document, images blocked.

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::origin::{cross_site, from_another_site};
use super::respond::{json_response, text};
use super::Peer;
use crate::access::jmap::frames::FrameView;
use crate::access::jmap::push::Body;
use crate::access::jmap::webmail::Images;
use crate::access::jmap::Jmap;
use crate::store::names::UserName;

/// `/webmail/view/{email}`: a frame ticket for the email, if the user can read it.
pub(super) async fn view(
    jmap: &Jmap,
    peer: &Peer,
    user: &UserName,
    request: &Request<Incoming>,
) -> Response<Body> {
    let id = request.uri().path().trim_start_matches("/webmail/view/");
    let images = if request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "images=1"))
    {
        Images::Shown
    } else {
        Images::Blocked
    };
    // Made now (and kept), so that the frame's load is a look-up and the count is known.
    let Some(document) = jmap.html_view(user, &peer.session(user), id, images).await else {
        return text(StatusCode::NOT_FOUND, "no such email\n");
    };
    let view = FrameView {
        user: user.clone(),
        email_id: id.to_string(),
        images,
    };
    match jmap.frames.issue(view) {
        Some(ticket) => json_response(
            StatusCode::OK,
            &json!({"frame": format!("/webmail/frame/{ticket}"), "remoteImages": document.remote_images}),
        ),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many messages open, try later\n",
        ),
    }
}

/// `/webmail/frame/{ticket}`: the document the ticket names.
pub(super) async fn frame(jmap: &Jmap, peer: &Peer, request: &Request<Incoming>) -> Response<Body> {
    if from_another_site(request, peer) {
        return cross_site();
    }
    let ticket = request.uri().path().trim_start_matches("/webmail/frame/");
    let Some(view) = jmap.frames.view(ticket) else {
        return text(
            StatusCode::NOT_FOUND,
            "this message view has expired: open the message again\n",
        );
    };
    if let Err(refusal) = peer.log_in(jmap, &view.user) {
        return refusal;
    }
    let session = peer.session(&view.user);
    match jmap
        .html_view(&view.user, &session, &view.email_id, view.images)
        .await
    {
        Some(document) => message_document(document.document.as_bytes(), view.images),
        None => text(StatusCode::NOT_FOUND, "no such email\n"),
    }
}

/// `/webmail/html/{email}`: the document, images blocked.
pub(super) async fn html(
    jmap: &Jmap,
    peer: &Peer,
    user: &UserName,
    request: &Request<Incoming>,
) -> Response<Body> {
    let id = request.uri().path().trim_start_matches("/webmail/html/");
    match jmap
        .html_view(user, &peer.session(user), id, Images::Blocked)
        .await
    {
        Some(document) => message_document(document.document.as_bytes(), Images::Blocked),
        None => text(StatusCode::NOT_FOUND, "no such email\n"),
    }
}

/// A message's document with the headers that keep it in its sandbox.
fn message_document(document: &[u8], images: Images) -> Response<Body> {
    let mut response = Response::new(Body::whole(document.to_vec()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(images.policy()),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
