//! Tickets for the webmail's message frames. The frame loads a message's document by URL,
//! so that the document has its own Content-Security-Policy (a `srcdoc` frame would take the
//! page's, which refuses inline styles and remote images); a frame's request carries no
//! bearer token, so the page asks (with its token) for a ticket: a random name for one
//! user's view of one email, good for a minute, which the frame's URL carries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::webmail::Images;
use crate::store::names::UserName;

/// How long a ticket is good for: the frame loads it at once.
const TICKET_LIFETIME: Duration = Duration::from_secs(60);
/// Tickets held at most (expired ones are dropped first).
const TICKETS_MAX: usize = 10_000;

/// What a ticket lets its holder see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameView {
    pub user: UserName,
    pub email_id: String,
    pub images: Images,
}

/// Tickets issued and not yet expired.
#[derive(Default)]
pub struct FrameTickets(Mutex<HashMap<String, (FrameView, Instant)>>);

impl FrameTickets {
    /// A new ticket for `view`: 32 random bytes, URL-safe base64; `None` when too many are
    /// held or no randomness is to be had.
    pub fn issue(&self, view: FrameView) -> Option<String> {
        let mut bytes = [0u8; 32];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut bytes)
            .ok()?;
        let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= TICKETS_MAX {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= TICKETS_MAX {
                return None;
            }
        }
        map.insert(ticket.clone(), (view, now + TICKET_LIFETIME));
        Some(ticket)
    }

    /// The view a ticket names, while it is good.
    pub fn view(&self, ticket: &str) -> Option<FrameView> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(ticket)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(view, _)| view.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_names_its_view_and_nothing_else() {
        let tickets = FrameTickets::default();
        let view = FrameView {
            user: UserName::parse("ann@example.org").expect("name"),
            email_id: "M1".into(),
            images: Images::Shown,
        };
        let ticket = tickets.issue(view.clone()).expect("ticket");
        assert_eq!(ticket.len(), 43);
        assert_eq!(tickets.view(&ticket), Some(view));
        assert_eq!(tickets.view("guess"), None);
        assert_ne!(
            tickets.issue(tickets.view(&ticket).expect("view")),
            Some(ticket)
        );
    }
}
