//! IMAP4rev1 (RFC 3501) over the users' Maildirs. Commands are cut out of the stream by
//! `framing` and decoded with `imap-codec` (literals and LITERAL+ included); responses are
//! written by `wire` (strings, ENVELOPE with `address`, BODYSTRUCTURE, body sections); `flags`
//! names Maildir flag letters and keywords; `search` evaluates SEARCH keys; `notify` reads
//! NOTIFY (RFC 5465); `session` is the state machine, one file per command family. `append` reads MULTIAPPEND and CATENATE, whose
//! IMAP URLs `url` reads;
//! `urlauth` reads URLAUTH's (RFC 4467) arguments and authorized URLs and signs them; `urlfetch`
//! reads URLFETCH's plain and extended (RFC 5524) forms and answers one URL, BINARY from `decoded`.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use crate::net::connection::Client;
use crate::session_context::SessionContext;
use crate::store::snapshots::SnapshotCache;

pub mod address;
pub mod append;
pub mod budget;
pub mod decoded;
pub mod extensions;
pub mod flags;
pub mod framing;
pub mod mutf7;
pub mod notify;
pub mod orderedsubject;
pub mod partial;
pub mod search;
pub mod session;
pub mod sets;
pub mod sort;
pub mod thread;
pub mod url;
pub mod urlauth;
pub mod urlfetch;
pub mod wire;

/// IMAP on a listener, and what its sessions see: what every protocol shares, plus the
/// folder message lists that sessions seeing a folder alike share.
pub struct Imap {
    pub shared: Arc<SessionContext>,
    pub snapshots: SnapshotCache,
}

impl Deref for Imap {
    type Target = SessionContext;

    fn deref(&self) -> &SessionContext {
        &self.shared
    }
}

impl crate::net::Protocol for Imap {
    fn refusal(&self, why: &str) -> String {
        format!("* BYE [UNAVAILABLE] {why}\r\n")
    }

    fn login_window(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Option<crate::net::limits::LoginWindow>, crate::net::limits::TooManyWaiting> {
        self.shared.prelogin_window(ip)
    }

    fn serve(self: Arc<Self>, client: Client) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { session::ImapSession::new(self, client).run().await })
    }
}
