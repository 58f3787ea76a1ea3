//! A user's mail as JMAP sees it, over the same Maildir folders IMAP and POP3 serve: which
//! mailboxes and emails there are, under which ids, and in which state.
//!
//! Ids are derived, not stored, so they survive restarts and agree between nodes: a mailbox
//! is named by its folder's UIDVALIDITY (a deleted and re-created folder is a new mailbox), an
//! email by a hash of its Maildir file name without the flags (kept when flags change and when
//! JMAP moves it to another mailbox). Each look at the account rescans only the folders whose
//! directories changed (inotify), runs the retrieve stage once for messages it has not
//! screened yet, and feeds the state trackers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::api::MethodError;
use super::budget::Work;
use super::changes::Tracker;
use super::message::Summary;
use crate::mail::Session;
use crate::message::Message;
use crate::plugin::retrieve::{self, View};
use crate::plugin::{PluginSet, Services, Stage};
use crate::store::keywords::Keywords;
use crate::store::mailbox::{ensure_special_use, list_folders, Folder, MailEntry, Snapshot};
use crate::store::watch::FolderWatch;
use crate::sys::blocking;

/// Bytes of summaries one account keeps between requests (about 10 000 ordinary emails).
pub const SUMMARY_CACHE_BYTES: usize = 32 << 20;
/// A summary larger than this is not kept at all.
pub const MAX_CACHED_SUMMARY: usize = 256 << 10;
/// Thread ids one account keeps (about 100 bytes each): an account larger than the summary
/// cache still gets its thread counts without every message parsed again on every request.
pub const MAX_CACHED_THREADS: usize = 300_000;

/// One folder as last scanned.
struct FolderView {
    folder: Folder,
    watch: Option<FolderWatch>,
    snapshot: Snapshot,
}

/// A mailbox: one Maildir folder.
#[derive(Debug, Clone)]
pub struct MailboxRecord {
    pub id: String,
    /// The IMAP name (`INBOX`, `Archive/2026`).
    pub name: String,
    pub parent_id: Option<String>,
    pub role: Option<&'static str>,
    pub total: usize,
    pub unread: usize,
    pub folder: Folder,
}

impl MailboxRecord {
    /// The last part of the name, which JMAP shows under its parent.
    pub fn short_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

/// An email: one message file of one folder.
#[derive(Debug, Clone)]
pub struct EmailRecord {
    pub id: String,
    pub mailbox_id: String,
    pub entry: MailEntry,
    /// JMAP keywords (`$seen`, `$flagged`, …, and the folder's own keyword names).
    pub keywords: Vec<String>,
}

/// JMAP keywords for Maildir flags (IMAP's system flags; `\Deleted` has no keyword).
const SYSTEM_KEYWORDS: [(char, &str); 4] = [
    ('D', "$draft"),
    ('F', "$flagged"),
    ('R', "$answered"),
    ('S', "$seen"),
];

/// The Maildir flag letter of a system keyword.
pub fn system_flag(keyword: &str) -> Option<char> {
    SYSTEM_KEYWORDS
        .iter()
        .find(|(_, k)| k.eq_ignore_ascii_case(keyword))
        .map(|(c, _)| *c)
}

fn keywords_of(entry: &MailEntry, names: &Keywords) -> Vec<String> {
    let mut keywords: Vec<String> = SYSTEM_KEYWORDS
        .iter()
        .filter(|(c, _)| entry.flags.contains(*c))
        .map(|(_, k)| k.to_string())
        .collect();
    keywords.extend(
        entry
            .flags
            .keyword_letters()
            .filter_map(|letter| names.name(letter))
            .map(str::to_lowercase),
    );
    keywords
}

/// What the retrieve stage made of the account's messages, for one plugin generation.
#[derive(Default)]
struct Screening {
    generation: u64,
    screened: HashSet<String>,
    hidden: HashSet<String>,
    edited: HashMap<String, Arc<Vec<u8>>>,
}

pub struct Account {
    pub user: String,
    pub maildir: PathBuf,
    folders: BTreeMap<String, FolderView>,
    pub mailboxes: Vec<MailboxRecord>,
    /// Every visible email, mailbox by mailbox (INBOX first), by UID within one.
    pub emails: Vec<EmailRecord>,
    by_id: HashMap<String, usize>,
    screening: Screening,
    /// What queries and threads need of each email, parsed once.
    summaries: HashMap<String, Arc<Summary>>,
    /// The sum of the kept summaries' weights, at most [`SUMMARY_CACHE_BYTES`].
    summary_bytes: usize,
    /// Email id -> thread id, at most [`MAX_CACHED_THREADS`], shared with snapshots.
    threads: Arc<HashMap<String, String>>,
    /// The plugin generation the current view was built under (`None`: not built yet).
    installed_under: Option<u64>,
    pub email_states: Tracker,
    pub mailbox_states: Tracker,
}

/// The role a folder plays, from the names our IMAP server and common clients give them.
fn role_of(name: &str) -> Option<&'static str> {
    let roles = [
        ("INBOX", "inbox"),
        ("Sent", "sent"),
        ("Sent Messages", "sent"),
        ("Drafts", "drafts"),
        ("Trash", "trash"),
        ("Deleted Messages", "trash"),
        ("Junk", "junk"),
        ("Spam", "junk"),
        ("Archive", "archive"),
    ];
    roles
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, role)| *role)
}

/// `M` and 24 hex digits of the SHA-256 of what names the message.
fn email_id(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let mut id = String::with_capacity(25);
    id.push('M');
    for byte in &digest[..12] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

fn mailbox_id(uid_validity: u32) -> String {
    format!("F{uid_validity}")
}

fn signature(parts: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

impl Account {
    /// The account of `user`, whose Maildir gets the special-use folders if it lacks them.
    pub fn new(user: &str, maildir: PathBuf, epoch: &str) -> Account {
        if let Err(e) = blocking::run(|| ensure_special_use(&maildir)) {
            tracing::warn!(user, "cannot create the special-use folders: {e}");
        }
        Account {
            user: user.to_string(),
            maildir,
            folders: BTreeMap::new(),
            mailboxes: Vec::new(),
            emails: Vec::new(),
            by_id: HashMap::new(),
            screening: Screening::default(),
            summaries: HashMap::new(),
            summary_bytes: 0,
            threads: Arc::default(),
            installed_under: None,
            email_states: Tracker::new(epoch),
            mailbox_states: Tracker::new(epoch),
        }
    }

    /// Looks at the Maildir again: rescans changed folders, screens new messages through the
    /// retrieve stage, and moves the states on if anything changed.
    pub async fn refresh(
        &mut self,
        plugins: &Arc<PluginSet>,
        services: &Services,
        session: &Session,
    ) -> std::io::Result<()> {
        let changed = blocking::run(|| self.rescan())?;
        if !changed && self.installed_under == Some(plugins.generation) {
            // Nothing on disk moved and the same plugins see it: the view stands.
            return Ok(());
        }
        let emails = self.collect();
        let emails = self.screen(emails, plugins, services, session).await;
        self.install(emails);
        self.installed_under = Some(plugins.generation);
        Ok(())
    }

    /// Rescans every folder that may have changed; drops folders that are gone. True when
    /// something was (re)read or dropped.
    fn rescan(&mut self) -> std::io::Result<bool> {
        std::fs::create_dir_all(&self.maildir)?;
        let names = list_folders(&self.maildir);
        let before = self.folders.len();
        self.folders.retain(|name, _| names.contains(name));
        let mut changed = self.folders.len() != before;
        for name in names {
            if let Some(view) = self.folders.get_mut(&name) {
                if view.watch.as_ref().is_some_and(|w| !w.take_events()) {
                    continue;
                }
                view.snapshot = view.folder.scan(false)?;
                changed = true;
                continue;
            }
            changed = true;
            let folder = match Folder::open_in(&self.maildir, &name) {
                Ok(folder) => folder,
                // A name we do not serve is left out; a folder that cannot be opened is an
                // outage, not an empty mailbox.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::warn!(folder = name, "JMAP: folder skipped: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let watch = FolderWatch::new(&folder.path).ok();
            let snapshot = folder.scan(false)?;
            self.folders.insert(
                name,
                FolderView {
                    folder,
                    watch,
                    snapshot,
                },
            );
        }
        Ok(changed)
    }

    /// Every message of every folder under its email id, INBOX first.
    fn collect(&self) -> Vec<EmailRecord> {
        let mut seen = HashSet::new();
        let mut emails = Vec::new();
        for (name, view) in self.ordered_folders() {
            let mailbox = mailbox_id(view.snapshot.uid_validity);
            for entry in &view.snapshot.entries {
                let mut id = email_id(&entry.key);
                if !seen.insert(id.clone()) {
                    // The same file name in two folders (a hard-linked copy): a second email.
                    id = email_id(&format!("{name}/{}", entry.key));
                    seen.insert(id.clone());
                }
                emails.push(EmailRecord {
                    id,
                    mailbox_id: mailbox.clone(),
                    keywords: keywords_of(entry, &view.snapshot.keywords),
                    entry: entry.clone(),
                });
            }
        }
        emails
    }

    fn ordered_folders(&self) -> impl Iterator<Item = (&String, &FolderView)> {
        let inbox = self.folders.iter().filter(|(n, _)| *n == "INBOX");
        inbox.chain(self.folders.iter().filter(|(n, _)| *n != "INBOX"))
    }

    /// Runs the retrieve stage for messages not screened under the current plugins; leaves
    /// out the hidden ones.
    async fn screen(
        &mut self,
        emails: Vec<EmailRecord>,
        plugins: &Arc<PluginSet>,
        services: &Services,
        session: &Session,
    ) -> Vec<EmailRecord> {
        if !plugins.handles(Stage::Retrieve) {
            self.screening = Screening::default();
            return emails;
        }
        if self.screening.generation != plugins.generation {
            self.summaries.clear();
            self.summary_bytes = 0;
            self.threads = Arc::default();
            self.screening = Screening {
                generation: plugins.generation,
                ..Screening::default()
            };
        }
        let mut shown = Vec::with_capacity(emails.len());
        for email in emails {
            if !self.screening.screened.contains(&email.id) {
                self.screen_one(&email, plugins, services, session).await;
            }
            if !self.screening.hidden.contains(&email.id) {
                shown.push(email);
            }
        }
        shown
    }

    async fn screen_one(
        &mut self,
        email: &EmailRecord,
        plugins: &Arc<PluginSet>,
        services: &Services,
        session: &Session,
    ) {
        let Some(folder) = self.folder_of(&email.mailbox_id) else {
            return;
        };
        let (name, folder) = (folder.0.to_string(), folder.1.clone());
        let Ok(bytes) = blocking::run(|| folder.read(&email.entry)) else {
            return;
        };
        let view = retrieve::view(
            plugins,
            services,
            session.clone(),
            &name,
            email.entry.uid,
            bytes,
        )
        .await;
        let screening = &mut self.screening;
        screening.screened.insert(email.id.clone());
        match view {
            View::Hidden => {
                screening.hidden.insert(email.id.clone());
            }
            View::Shown(Some(edited)) => {
                screening.edited.insert(email.id.clone(), edited);
            }
            View::Shown(None) => {}
        }
    }

    /// Takes in the emails now visible: mailboxes with their counts, the id index, the states.
    fn install(&mut self, emails: Vec<EmailRecord>) {
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
        for email in &emails {
            let count = counts.entry(email.mailbox_id.as_str()).or_default();
            count.0 += 1;
            if !email.entry.flags.contains('S') {
                count.1 += 1;
            }
        }
        let ids: HashMap<&String, String> = self
            .folders
            .iter()
            .map(|(name, view)| (name, mailbox_id(view.snapshot.uid_validity)))
            .collect();
        let mailboxes: Vec<MailboxRecord> = self
            .ordered_folders()
            .map(|(name, view)| {
                let id = mailbox_id(view.snapshot.uid_validity);
                let (total, unread) = counts.get(id.as_str()).copied().unwrap_or_default();
                let parent_id = name
                    .rsplit_once('/')
                    .and_then(|(parent, _)| ids.get(&parent.to_string()).cloned());
                MailboxRecord {
                    role: role_of(name),
                    id,
                    name: name.clone(),
                    parent_id,
                    total,
                    unread,
                    folder: view.folder.clone(),
                }
            })
            .collect();
        self.mailbox_states.observe(
            mailboxes
                .iter()
                .map(|m| {
                    let sig = signature((&m.name, &m.parent_id, m.total, m.unread));
                    (m.id.clone(), sig)
                })
                .collect(),
        );
        self.email_states.observe(
            emails
                .iter()
                .map(|e| {
                    let flags = e.entry.flags.to_string();
                    (e.id.clone(), signature((&e.mailbox_id, flags)))
                })
                .collect(),
        );
        let present: HashSet<&String> = emails.iter().map(|e| &e.id).collect();
        self.summaries.retain(|id, _| present.contains(id));
        if self.threads.keys().any(|id| !present.contains(id)) {
            Arc::make_mut(&mut self.threads).retain(|id, _| present.contains(id));
        }
        self.summary_bytes = self.summaries.values().map(|s| s.weight).sum();
        self.by_id = emails
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i))
            .collect();
        self.emails = emails;
        self.mailboxes = mailboxes;
    }

    pub fn email(&self, id: &str) -> Option<&EmailRecord> {
        self.emails.get(*self.by_id.get(id)?)
    }

    pub fn mailbox(&self, id: &str) -> Option<&MailboxRecord> {
        self.mailboxes.iter().find(|m| m.id == id)
    }

    /// The folder's name and handle for a mailbox id.
    fn folder_of(&self, mailbox_id: &str) -> Option<(&String, &Folder)> {
        self.folders
            .iter()
            .find(|(_, v)| self.mailbox_matches(v, mailbox_id))
            .map(|(name, view)| (name, &view.folder))
    }

    fn mailbox_matches(&self, view: &FolderView, id: &str) -> bool {
        mailbox_id(view.snapshot.uid_validity) == id
    }

    /// The bytes a client is served for an email: the retrieve stage's edit, or the file.
    pub fn read(&self, email: &EmailRecord) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(edited) = self.screening.edited.get(&email.id) {
            return Ok(edited.clone());
        }
        let (_, folder) = self
            .folder_of(&email.mailbox_id)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such mailbox"))?;
        blocking::run(|| folder.read(&email.entry)).map(Arc::new)
    }

    /// The message file's bytes as stored (what is sent; retrieve-stage edits are a view).
    pub fn stored(&self, email: &EmailRecord) -> std::io::Result<Vec<u8>> {
        let (_, folder) = self
            .folder_of(&email.mailbox_id)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such mailbox"))?;
        blocking::run(|| folder.read(&email.entry))
    }

    /// The message as a client is served it, parsed.
    pub fn message(&self, email: &EmailRecord) -> std::io::Result<Message> {
        Ok(Message::new(self.read(email)?.as_ref().clone()))
    }

    /// The email's summary (parsed on first use; `None` if the message cannot be read).
    pub fn summary(&mut self, id: &str) -> Option<Arc<Summary>> {
        if let Some(summary) = self.summaries.get(id) {
            return Some(summary.clone());
        }
        let email = self.email(id)?;
        let message = self.message(email).ok()?;
        let summary = Arc::new(Summary::of(&message));
        self.keep_summary(id.to_string(), summary.clone());
        Some(summary)
    }

    /// The thread id of an email, for what is not bounded by a request (an email just
    /// created): its conversation's first Message-ID, hashed.
    pub fn thread_id(&mut self, id: &str) -> String {
        if let Some(thread) = self.threads.get(id) {
            return thread.clone();
        }
        let summary = self.summary(id);
        thread_of(id, summary.as_deref())
    }

    /// What a scan needs of the account, to run without holding the account: the emails as
    /// they are now, where to read them, the summaries parsed so far, the Email state.
    pub fn scan_view(&self) -> ScanView {
        ScanView {
            emails: self.emails.clone(),
            folders: self
                .folders
                .values()
                .map(|v| (mailbox_id(v.snapshot.uid_validity), v.folder.clone()))
                .collect(),
            edited: self.screening.edited.clone(),
            summaries: self.summaries.clone(),
            threads: self.threads.clone(),
            email_state: self.email_states.state(),
        }
    }

    /// Keeps the summaries a scan parsed, for emails still there.
    pub fn adopt_summaries(&mut self, parsed: Vec<(String, Arc<Summary>)>) {
        for (id, summary) in parsed {
            if self.by_id.contains_key(&id) {
                self.keep_summary(id, summary);
            }
        }
    }

    /// Keeps what a scan parsed: summaries, and thread ids up to [`MAX_CACHED_THREADS`].
    pub fn adopt(&mut self, found: Found) {
        let fresh: Vec<(String, String)> = found
            .threads
            .into_iter()
            .filter(|(id, _)| self.by_id.contains_key(id) && !self.threads.contains_key(id))
            .collect();
        if !fresh.is_empty() && self.threads.len() < MAX_CACHED_THREADS {
            let room = MAX_CACHED_THREADS - self.threads.len();
            Arc::make_mut(&mut self.threads).extend(fresh.into_iter().take(room));
        }
        self.adopt_summaries(found.summaries.into_iter().collect());
    }

    /// Keeps a summary for later requests if it fits the cache's byte bound: one over
    /// [`MAX_CACHED_SUMMARY`] (a message of huge address lists) is parsed again when asked
    /// for, rather than resident for good; when the cache is full, new summaries are not kept.
    fn keep_summary(&mut self, id: String, summary: Arc<Summary>) {
        if summary.weight > MAX_CACHED_SUMMARY || self.summaries.contains_key(&id) {
            return;
        }
        let total = self.summary_bytes.saturating_add(summary.weight);
        if total > SUMMARY_CACHE_BYTES {
            return;
        }
        self.summary_bytes = total;
        self.summaries.insert(id, summary);
    }

    /// The size a client is told: of the edited bytes when the retrieve stage edited it.
    pub fn size(&self, email: &EmailRecord) -> u64 {
        self.screening
            .edited
            .get(&email.id)
            .map_or(email.entry.size, |e| e.len() as u64)
    }
}

/// The thread id of email `id` from its summary: the conversation's first Message-ID, hashed.
pub fn thread_of(id: &str, summary: Option<&Summary>) -> String {
    let root = summary.and_then(|s| s.thread_root.as_deref()).unwrap_or(id);
    let mut thread = email_id(root);
    thread.replace_range(..1, "T");
    thread
}

/// An account's emails as they were when a scan began (see [`Account::scan_view`]).
pub struct ScanView {
    pub emails: Vec<EmailRecord>,
    folders: HashMap<String, Folder>,
    edited: HashMap<String, Arc<Vec<u8>>>,
    summaries: HashMap<String, Arc<Summary>>,
    threads: Arc<HashMap<String, String>>,
    pub email_state: String,
}

/// What a request parsed over a snapshot, to keep in the account afterwards.
#[derive(Default)]
pub struct Found {
    pub summaries: HashMap<String, Arc<Summary>>,
    pub threads: HashMap<String, String>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.summaries.is_empty() && self.threads.is_empty()
    }
}

impl ScanView {
    /// The bytes a client is served for an email (see [`Account::read`]); the caller is
    /// already off the async workers.
    pub fn read(&self, email: &EmailRecord) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(edited) = self.edited.get(&email.id) {
            return Ok(edited.clone());
        }
        let folder = self
            .folders
            .get(&email.mailbox_id)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such mailbox"))?;
        folder.read(&email.entry).map(Arc::new)
    }

    /// The size a client is told (see [`Account::size`]).
    pub fn size(&self, email: &EmailRecord) -> u64 {
        self.edited
            .get(&email.id)
            .map_or(email.entry.size, |e| e.len() as u64)
    }

    /// A snapshot of no emails, for tests of what runs over one.
    #[cfg(test)]
    pub fn empty() -> ScanView {
        ScanView {
            emails: Vec::new(),
            folders: HashMap::new(),
            edited: HashMap::new(),
            summaries: HashMap::new(),
            threads: Arc::default(),
            email_state: String::new(),
        }
    }

    /// The summary parsed before the scan, if there was one.
    pub fn known_summary(&self, id: &str) -> Option<Arc<Summary>> {
        self.summaries.get(id).cloned()
    }

    /// The email's summary: known before, parsed earlier in this request (`found`), or read
    /// and parsed now — which costs its size, taken from `work` first. `Ok(None)`: the file
    /// is gone.
    pub fn summary_within(
        &self,
        email: &EmailRecord,
        work: &Work,
        found: &mut Found,
    ) -> Result<Option<Arc<Summary>>, MethodError> {
        if let Some(known) = self
            .summaries
            .get(&email.id)
            .or_else(|| found.summaries.get(&email.id))
        {
            return Ok(Some(known.clone()));
        }
        work.add(self.size(email))?;
        let Ok(bytes) = self.read(email) else {
            return Ok(None);
        };
        let summary = Arc::new(Summary::of(&Message::new(bytes.as_ref().clone())));
        found
            .threads
            .insert(email.id.clone(), thread_of(&email.id, Some(&summary)));
        found.summaries.insert(email.id.clone(), summary.clone());
        Ok(Some(summary))
    }

    /// The email's thread id, from what is known or parsed within `work` (see
    /// [`ScanView::summary_within`]). `Ok(None)`: the file is gone.
    pub fn thread_within(
        &self,
        email: &EmailRecord,
        work: &Work,
        found: &mut Found,
    ) -> Result<Option<String>, MethodError> {
        if let Some(thread) = self
            .threads
            .get(&email.id)
            .or_else(|| found.threads.get(&email.id))
        {
            return Ok(Some(thread.clone()));
        }
        let summary = self.summary_within(email, work, found)?;
        let thread = summary.map(|s| thread_of(&email.id, Some(&s)));
        if let Some(thread) = &thread {
            found.threads.insert(email.id.clone(), thread.clone());
        }
        Ok(thread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_use_the_jmap_id_alphabet_and_depend_only_on_the_name() {
        let id = email_id("1700000000.M1P2Q3.host,S=10,W=12");
        assert_eq!(id.len(), 25);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(id, email_id("1700000000.M1P2Q3.host,S=10,W=12"));
        assert_ne!(id, email_id("1700000000.M1P2Q4.host,S=10,W=12"));
        assert_eq!(mailbox_id(42), "F42");
    }

    #[test]
    fn roles_come_from_the_special_use_names() {
        assert_eq!(role_of("inbox"), Some("inbox"));
        assert_eq!(role_of("Sent"), Some("sent"));
        assert_eq!(role_of("trash"), Some("trash"));
        assert_eq!(role_of("Projects"), None);
    }
}
