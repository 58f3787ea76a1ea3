//! STARTTLS, LOGIN and AUTHENTICATE PLAIN. Credentials are only taken over TLS: before it, a
//! login is refused before the client is asked for anything.

use imap_codec::imap_types::auth::AuthMechanism;

use super::{framing, ImapSession, Next};

impl ImapSession {
    pub(super) async fn starttls(&mut self, tag: &str) -> Next {
        let Ok(acceptor) = self.client.starttls_acceptor(self.shared.tls.as_ref()) else {
            self.send(&format!("{tag} BAD STARTTLS not available"));
            return Next::Continue;
        };
        self.send(&format!("{tag} OK Begin TLS negotiation now"));
        // Bytes pipelined behind STARTTLS came in the clear: they are dropped.
        self.framer.clear();
        if self.client.start_tls(&acceptor, self.idle_limit()).await {
            Next::Continue
        } else {
            Next::Close
        }
    }

    /// Refuses a login attempt that cannot go ahead (no TLS, already in); true when refused.
    fn refuse_login(&mut self, tag: &str) -> bool {
        if !self.client.tls {
            self.send(&format!(
                "{tag} NO [PRIVACYREQUIRED] Log in over TLS (STARTTLS first)"
            ));
            return true;
        }
        if self.user.is_some() {
            self.send(&format!("{tag} BAD Already logged in"));
            return true;
        }
        false
    }

    pub(super) async fn authenticate(
        &mut self,
        tag: &str,
        mechanism: &AuthMechanism<'_>,
        initial: Option<Vec<u8>>,
    ) -> Next {
        if *mechanism != AuthMechanism::Plain {
            self.send(&format!("{tag} NO Only AUTHENTICATE PLAIN is supported"));
            return Next::Continue;
        }
        // Checked before the `+`: no client is invited to send a password in the clear.
        if self.refuse_login(tag) {
            return Next::Continue;
        }
        let data = match initial {
            Some(data) => Some(data),
            None => self.sasl_response().await,
        };
        let Some(data) = data else {
            self.send(&format!("{tag} BAD Authentication cancelled"));
            return Next::Continue;
        };
        let mut fields = data.split(|&b| b == 0).skip(1);
        let user = fields
            .next()
            .map(|u| String::from_utf8_lossy(u).into_owned());
        let password = fields
            .next()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        match (user, password) {
            (Some(u), Some(p)) => self.login(tag, u, p).await,
            _ => {
                self.send(&format!("{tag} BAD Malformed PLAIN response"));
                Next::Continue
            }
        }
    }

    /// One line of base64 after a `+` continuation (AUTHENTICATE without initial response).
    async fn sasl_response(&mut self) -> Option<Vec<u8>> {
        self.send("+ ");
        loop {
            if let Some(line) = self.framer.take_line() {
                if line == b"*" {
                    return None;
                }
                return mail_parser::decoders::base64::base64_decode(&line);
            }
            if self.framer.buffered().len() > framing::MAX_LINE
                || self.receive(self.idle_limit()).await.is_err()
            {
                return None;
            }
        }
    }

    pub(super) async fn login(&mut self, tag: &str, user: String, password: String) -> Next {
        if self.refuse_login(tag) {
            return Next::Continue;
        }
        if !self.shared.login_allowed(self.client.peer.ip()) {
            self.send(&format!(
                "{tag} NO [UNAVAILABLE] Too many failed logins from your address, try later"
            ));
            return Next::Continue;
        }
        if !self.shared.users.available() {
            self.send(&format!(
                "{tag} NO [UNAVAILABLE] Authentication temporarily unavailable, try later"
            ));
            return Next::Continue;
        }
        let Some(name) = self
            .shared
            .verify_password(crate::config::Protocol::Imap, &user, password)
            .await
        else {
            self.auth_failures += 1;
            if self
                .shared
                .login_failed(self.client.peer.ip(), &user, self.auth_failures)
                .await
            {
                self.send("* BYE Too many failed logins");
                return Next::Close;
            }
            self.send(&format!(
                "{tag} NO [AUTHENTICATIONFAILED] Invalid credentials"
            ));
            return Next::Continue;
        };
        let Ok(slot) = self.shared.user_slot(crate::config::Protocol::Imap, &name) else {
            // RFC 5530: a limit, not a wrong password; the connection stays as it was.
            self.send(&format!(
                "{tag} NO [LIMIT] Too many connections for this user"
            ));
            return Next::Continue;
        };
        tracing::info!(user = %name, "IMAP login");
        self.user_slot = Some(slot);
        self.user = Some(name);
        self.login_window = None;
        if let Err(e) = crate::sys::blocking::run(|| self.create_special_use()) {
            tracing::warn!(user, "cannot create the special-use folders: {e}");
        }
        let caps = self.capabilities();
        self.send(&format!("{tag} OK [CAPABILITY {caps}] Logged in"));
        Next::Continue
    }
}
