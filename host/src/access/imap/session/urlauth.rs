//! URLAUTH (RFC 4467): RESETKEY, GENURLAUTH and URLFETCH (with its extended form of RFC 5524,
//! URLAUTH=BINARY), read before imap-codec (which does not know them). Keys live in the owner's Maildir (`store::urlauth_keys`); a URL of another
//! user's mailbox is fetched from that user's Maildir when its token verifies there and its
//! access identifier lets this user in. Whatever makes a URL unusable (bad syntax, wrong or
//! reset key, expiry, access, a message gone) answers it NIL, as the RFC asks.

use super::super::urlauth::{self, Argument, AuthUrl, MECHANISM};
use super::super::urlfetch::{self, Answer, Request};
use super::super::{budget, framing, mutf7, wire};
use super::{ImapSession, Next};
use crate::message::Message;
use crate::store::mailbox::{folder_path, Folder};
use crate::store::names::UserName;
use crate::store::urlauth_keys;
use crate::sys::blocking;

/// Bytes of stored messages one URLFETCH may read, per byte of its command budget.
const READ_AMPLIFICATION: u64 = 4;
/// What one URL costs besides its message (reading a key file, one HMAC): many tiny URLs
/// cannot add up to unbounded work.
const URL_COST: u64 = 4096;
/// Queued output goes to the client once this much is waiting.
const FLUSH: usize = 256 * 1024;

impl ImapSession {
    /// RESETKEY, GENURLAUTH or URLFETCH of a logged-in user; `None` for any other command.
    pub(super) async fn urlauth_command(&mut self, command: &[u8]) -> Option<Next> {
        self.user.as_ref()?;
        let tag = framing::tag_of(command);
        let space = command.iter().position(|&b| b == b' ')?;
        let after_tag = &command[space + 1..];
        let verb_end = after_tag
            .iter()
            .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
            .unwrap_or(after_tag.len());
        let verb = String::from_utf8_lossy(&after_tag[..verb_end]).to_ascii_uppercase();
        if !matches!(verb.as_str(), "RESETKEY" | "GENURLAUTH" | "URLFETCH") {
            return None;
        }
        let Some(args) = urlauth::arguments(&after_tag[verb_end..]) else {
            self.send(&format!("{tag} BAD Malformed arguments"));
            return Some(Next::Continue);
        };
        if verb == "URLFETCH" {
            match urlfetch::requests(args) {
                Ok(requests) => self.urlfetch(&tag, &requests).await,
                Err(why) => self.send(&format!("{tag} BAD {why}")),
            }
            return Some(Next::Continue);
        }
        // RESETKEY and GENURLAUTH take no lists.
        let Some(args) = args
            .into_iter()
            .map(|a| match a {
                Argument::Value(v) => Some(String::from_utf8_lossy(&v).into_owned()),
                Argument::List(_) => None,
            })
            .collect::<Option<Vec<String>>>()
        else {
            self.send(&format!("{tag} BAD Unexpected list"));
            return Some(Next::Continue);
        };
        match verb.as_str() {
            "RESETKEY" => self.resetkey(&tag, &args),
            _ => self.genurlauth(&tag, &args),
        }
        Some(Next::Continue)
    }

    /// RESETKEY [mailbox [mechanism...]]: every URL of the mailbox (of all, without one) void.
    fn resetkey(&mut self, tag: &str, args: &[String]) {
        if let Some(mech) = args
            .iter()
            .skip(1)
            .find(|m| !m.eq_ignore_ascii_case(MECHANISM))
        {
            self.send(&format!("{tag} NO Unknown URLAUTH mechanism {mech}"));
            return;
        }
        let mailbox = match args.first() {
            Some(sent) => {
                let utf8 = match self.rev2 {
                    true => sent.clone(),
                    false => mutf7::decode(sent).unwrap_or_else(|| sent.clone()),
                };
                if let Err(why) = self.url_folder(&utf8) {
                    self.send(&format!("{tag} NO [NONEXISTENT] {why}"));
                    return;
                }
                Some(utf8)
            }
            None => None,
        };
        let maildir = self.maildir();
        match blocking::run(|| urlauth_keys::reset(&maildir, mailbox.as_deref())) {
            Ok(()) => self.send(&format!("{tag} OK RESETKEY completed")),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reset URLAUTH keys");
                self.send(&format!("{tag} NO [SERVERBUG] Cannot reset the key"));
            }
        }
    }

    /// GENURLAUTH (url mechanism)...: each URL of the user's own mailboxes, signed.
    fn genurlauth(&mut self, tag: &str, args: &[String]) {
        if args.is_empty() || !args.len().is_multiple_of(2) {
            self.send(&format!(
                "{tag} BAD GENURLAUTH takes URL and mechanism pairs"
            ));
            return;
        }
        let mut signed = Vec::new();
        for pair in args.chunks(2) {
            match self.sign(&pair[0], &pair[1]) {
                Ok(url) => signed.push(url),
                Err(why) => {
                    let quoted =
                        String::from_utf8_lossy(&wire::string(pair[0].as_bytes())).into_owned();
                    self.send(&format!("{tag} NO Cannot authorize {quoted}: {why}"));
                    return;
                }
            }
        }
        let mut line = b"* GENURLAUTH".to_vec();
        for url in &signed {
            line.push(b' ');
            line.extend_from_slice(&wire::string(url.as_bytes()));
        }
        self.client.conn.queue(&line);
        self.client.conn.queue(b"\r\n");
        self.send(&format!("{tag} OK GENURLAUTH completed"));
    }

    fn sign(&self, url: &str, mechanism: &str) -> Result<String, String> {
        if !mechanism.eq_ignore_ascii_case(MECHANISM) {
            return Err(format!("unknown mechanism {mechanism}"));
        }
        let parsed = urlauth::parse(url)?;
        if parsed.token.is_some() {
            return Err("the URL already carries a token".into());
        }
        let user = self.user.as_deref().unwrap_or_default();
        if !parsed.owner.eq_ignore_ascii_case(user) {
            return Err("only the owner of a mailbox authorizes its URLs".into());
        }
        self.url_folder(&parsed.message.mailbox)?;
        let maildir = self.maildir();
        let key = blocking::run(|| urlauth_keys::key_or_new(&maildir, &parsed.message.mailbox))
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot keep a URLAUTH key");
                "cannot keep the key".to_string()
            })?;
        Ok(parsed.authorized(&key))
    }

    /// URLFETCH url...: one URLFETCH response per URL, its data or NIL, sent as they come.
    async fn urlfetch(&mut self, tag: &str, requests: &[Request]) {
        let mut read_left = self.budget().command.saturating_mul(READ_AMPLIFICATION);
        let mut queued = 0usize;
        for request in requests {
            let Some(answer) = blocking::run(|| self.fetch_authorized(request, &mut read_left))
            else {
                self.send(&budget::refusal(tag, "The URLs ask for too much at once"));
                return;
            };
            let mut line = b"* URLFETCH ".to_vec();
            line.extend_from_slice(&wire::string(request.url.as_bytes()));
            line.push(b' ');
            line.extend_from_slice(&answer.data);
            line.extend_from_slice(b"\r\n");
            if let Some(why) = &answer.warning {
                line.extend_from_slice(format!("* NO {why}\r\n").as_bytes());
            }
            queued = queued.saturating_add(line.len());
            self.client.conn.queue(&line);
            if queued >= FLUSH {
                queued = 0;
                if self.client.conn.flush().await.is_err() {
                    return;
                }
            }
        }
        self.send(&format!("{tag} OK URLFETCH completed"));
    }

    /// What a requested URL gives this user (NIL when it gives nothing); `None` when fetching
    /// it would go over what the command may read.
    fn fetch_authorized(&self, request: &Request, read_left: &mut u64) -> Option<Answer> {
        *read_left = read_left.checked_sub(URL_COST)?;
        let Ok(parsed) = urlauth::parse(&request.url) else {
            return Some(Answer::nil());
        };
        let user = self.user.as_deref().unwrap_or_default();
        if !parsed.allows(user) || parsed.expired(now()) {
            return Some(Answer::nil());
        }
        let Ok(owner) = UserName::parse(&parsed.owner) else {
            return Some(Answer::nil());
        };
        let maildir = owner.maildir(&self.shared.config.data_dir().join("mail"));
        let key = urlauth_keys::key(&maildir, &parsed.message.mailbox);
        if !matches!(key, Ok(Some(key)) if parsed.verifies(&key)) {
            return Some(Answer::nil());
        }
        let Some(message) = message(&maildir, &parsed, read_left)? else {
            return Some(Answer::nil());
        };
        let answer = urlfetch::answer(&message, &parsed.message, request.extended.as_ref());
        // The extended forms make new bytes (decoded parts, structures): counted as read.
        if request.extended.is_some() {
            let made = u64::try_from(answer.data.len()).unwrap_or(u64::MAX);
            *read_left = read_left.checked_sub(made)?;
        }
        Some(answer)
    }
}

/// The stored message `url` names, from `maildir`: `Some(None)` when there is none, `None`
/// when reading it would go over what the command may read (`read_left`).
fn message(
    maildir: &std::path::Path,
    url: &AuthUrl,
    read_left: &mut u64,
) -> Option<Option<Message>> {
    let Some(folder) = open(maildir, &url.message.mailbox) else {
        return Some(None);
    };
    let Ok(snapshot) = folder.scan(false) else {
        return Some(None);
    };
    if url
        .message
        .uid_validity
        .is_some_and(|v| v != snapshot.uid_validity)
    {
        return Some(None);
    }
    let Some(entry) = snapshot
        .entries
        .binary_search_by_key(&url.message.uid, |e| e.uid)
        .ok()
        .and_then(|i| snapshot.entries.get(i))
    else {
        return Some(None);
    };
    // The message is read whole whatever part is asked for: counted before it is.
    *read_left = read_left.checked_sub(entry.size)?;
    Some(folder.read(entry).ok().map(Message::new))
}

/// The existing folder of a (UTF-8) mailbox name in `maildir`; links are not followed.
fn open(maildir: &std::path::Path, utf8: &str) -> Option<Folder> {
    let name = mutf7::encode(utf8);
    let path = folder_path(maildir, &name).ok()?;
    let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
    if link || (!name.eq_ignore_ascii_case("INBOX") && !path.join("cur").is_dir()) {
        return None;
    }
    Folder::open_in(maildir, &name).ok()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
