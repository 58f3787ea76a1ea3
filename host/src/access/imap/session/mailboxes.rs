//! Mailbox administration: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS,
//! APPEND; the hierarchy (`/` separator over Maildir++ `.A.B` folders, parents that exist only
//! through their children) and the special-use folders every user gets (RFC 6154).

use std::collections::BTreeSet;
use std::path::PathBuf;

use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};

use super::super::budget::{OverBudget, Work};
use super::super::extensions::ListExtras;
use super::super::flags::failure;
use super::super::{budget, mutf7, wire};
use super::ImapSession;
use crate::store::mailbox::{
    count_folders, ensure_special_use, folder_path, list_folders, room_for, served_len, Flags,
    Folder, MailEntry, Snapshot, SPECIAL_USE,
};
use crate::store::special_use;
use crate::store::subscriptions;

fn raw_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(other) => String::from_utf8_lossy(other.as_ref()).into_owned(),
    }
}

pub(super) fn quoted(name: &str) -> String {
    String::from_utf8_lossy(&wire::string(name.as_bytes())).into_owned()
}

/// LIST wildcards: `*` matches anything, `%` anything but the hierarchy separator (RFC 3501
/// §6.3.8). Dynamic programming over (pattern, name) positions in two rows: O(p × n) time,
/// O(n) memory, not an exponential backtrack; a run of wildcards counts as one, each row
/// starts at the first name position still matched, and a row matching nothing ends it.
/// Every cell computed is charged to `work` (the LIST or LSUB command's budget), so many
/// long patterns against many long names end in `NO [LIMIT]`, not minutes of CPU.
fn wildcard_within(pattern: &str, name: &str, work: &Work) -> Result<bool, OverBudget> {
    let n: Vec<char> = name.chars().collect();
    // matches[j]: pattern[..i] matches name[..j], for the current i.
    let mut matches = vec![false; n.len() + 1];
    let mut next = vec![false; n.len() + 1];
    matches[0] = true;
    let mut previous: Option<char> = None;
    for c in pattern.chars() {
        let wild = c == '*' || c == '%';
        if wild && previous == Some('*') {
            continue;
        }
        if c == '%' && previous == Some('%') {
            continue;
        }
        previous = Some(c);
        // Cells before the first matched position stay unmatched in the next row too.
        let Some(first) = matches.iter().position(|&m| m) else {
            return Ok(false);
        };
        work.charge(u64::try_from(n.len() + 1 - first).unwrap_or(u64::MAX))?;
        next[..=first].fill(false);
        next[first] = wild && matches[first];
        for j in first + 1..=n.len() {
            next[j] = if wild {
                // Either the wildcard matches nothing, or it extends a match by one char.
                matches[j] || (next[j - 1] && (c == '*' || n[j - 1] != '/'))
            } else {
                matches[j - 1] && n[j - 1].eq_ignore_ascii_case(&c)
            };
        }
        std::mem::swap(&mut matches, &mut next);
    }
    Ok(matches[n.len()])
}

/// [`wildcard_within`] without a budget.
#[cfg(test)]
fn wildcard(pattern: &str, name: &str) -> bool {
    wildcard_within(pattern, name, &Work::new(u64::MAX)).unwrap_or(false)
}

/// The names any of `patterns` matches, within one command's [`budget::LIST_WORK`].
fn matching_names<'a>(
    patterns: &[String],
    names: impl Iterator<Item = &'a String>,
) -> Result<BTreeSet<&'a str>, OverBudget> {
    let work = Work::new(budget::LIST_WORK);
    let mut matching = BTreeSet::new();
    for name in names {
        for pattern in patterns {
            if wildcard_within(pattern, name, &work)? {
                matching.insert(name.as_str());
                break;
            }
        }
    }
    Ok(matching)
}

/// The `NO [LIMIT]` text for a LIST or LSUB whose matching went over [`budget::LIST_WORK`].
fn over_budget_text() -> String {
    "Patterns too long for this many mailboxes; use fewer or shorter patterns".to_string()
}

/// The `NO [LIMIT]` text for patterns too long or too many to match, if they are.
fn pattern_refusal(patterns: &[String]) -> Option<String> {
    if patterns.len() > budget::LIST_PATTERNS {
        return Some(format!(
            "At most {} patterns in one LIST",
            budget::LIST_PATTERNS
        ));
    }
    patterns
        .iter()
        .any(|p| p.len() > budget::LIST_PATTERN)
        .then(|| format!("Patterns are at most {} bytes", budget::LIST_PATTERN))
}

/// The answer for a folder whose directory is a symbolic link: it is never followed (it may
/// lead out of the user's Maildir), and LIST does not show it.
const LINK_REFUSAL: &str = "NO [NONEXISTENT] No such mailbox (symbolic links are not followed)";
const LINK_EXISTS: &str = "A symbolic link has that name, and links are not followed";

/// Whether the folder's directory entry is a symbolic link (not followed to find out).
fn is_link(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Every ancestor of a hierarchical name: `A/B/C` -> `A`, `A/B`.
fn parents(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(i, _)| &name[..i])
}

/// The mailbox tree: the folders that exist, and the names that exist only as their parents.
struct Tree {
    folders: BTreeSet<String>,
    parents_only: BTreeSet<String>,
}

impl Tree {
    fn read(maildir: &std::path::Path) -> Tree {
        // A folder that is a symbolic link is not served (it may lead out of the Maildir).
        let folders: BTreeSet<String> = list_folders(maildir)
            .into_iter()
            .filter(|name| folder_path(maildir, name).is_ok_and(|p| !is_link(&p)))
            .collect();
        let parents_only = folders
            .iter()
            .flat_map(|name| parents(name))
            .filter(|p| !folders.contains(*p))
            .map(str::to_string)
            .collect();
        Tree {
            folders,
            parents_only,
        }
    }

    fn has_children(&self, name: &str) -> bool {
        let prefix = format!("{name}/");
        self.folders
            .range(prefix.clone()..)
            .next()
            .is_some_and(|n| n.starts_with(&prefix))
    }
}

impl ImapSession {
    /// The name a command gives, as folders are named on disk: modified UTF-7 (an IMAP4rev2
    /// client sends UTF-8, which is encoded here).
    pub(super) fn mailbox_name(&self, mailbox: &Mailbox<'_>) -> String {
        let name = raw_name(mailbox);
        // A control character stays as sent, for the name check to refuse it.
        if self.rev2 && !name.chars().any(char::is_control) {
            mutf7::encode(&name)
        } else {
            name
        }
    }

    /// A folder's name as this client reads names: UTF-8 for IMAP4rev2, else as on disk.
    pub(super) fn shown_name(&self, name: &str) -> String {
        match self.rev2 {
            true => mutf7::decode(name).unwrap_or_else(|| name.to_string()),
            false => name.to_string(),
        }
    }

    fn reference_of(&self, reference: &Mailbox<'_>) -> String {
        match reference {
            Mailbox::Inbox => String::new(),
            other => self.mailbox_name(other),
        }
    }

    fn pattern_of(&self, pattern: &str) -> String {
        if self.rev2 {
            mutf7::encode(pattern)
        } else {
            pattern.to_string()
        }
    }

    /// The logged-in user's Maildir (commands that reach here run only after a login).
    pub(super) fn maildir(&self) -> PathBuf {
        let root = self.shared.config.data_dir().join("mail");
        match &self.user {
            Some(user) => user.maildir(&root),
            // Not logged in: a directory no user has (names never start with a dot).
            None => root.join(".nobody"),
        }
    }

    /// The folder a mailbox name refers to if it exists; else the tagged reply's text.
    pub(super) fn folder(&self, mailbox: &Mailbox<'_>) -> Result<(String, Folder), String> {
        let name = self.mailbox_name(mailbox);
        let path = folder_path(&self.maildir(), &name)
            .map_err(|e| format!("NO [CANNOT] Bad mailbox name: {}", e.0))?;
        if is_link(&path) {
            return Err(LINK_REFUSAL.into());
        }
        if !name.eq_ignore_ascii_case("INBOX") && !path.join("cur").is_dir() {
            return Err("NO [TRYCREATE] No such mailbox".into());
        }
        Folder::open_in(&self.maildir(), &name)
            .map(|folder| (name, folder))
            .map_err(|e| failure("Cannot open the mailbox", &e))
    }

    /// Sent, Drafts, Trash, Junk and Archive, where the user has none yet.
    pub(super) fn create_special_use(&self) -> std::io::Result<()> {
        ensure_special_use(&self.maildir())
    }

    /// CREATE, with the special uses (RFC 6154) the new folder is to have.
    pub(super) fn create(&mut self, tag: &str, mailbox: &Mailbox<'_>, uses: &[&str]) {
        // RFC 3501 §6.3.3: a trailing separator says the name will hold others; it is created
        // all the same, as a mailbox that can also hold messages.
        let given = self.mailbox_name(mailbox);
        let name = given.strip_suffix('/').unwrap_or(&given);
        match folder_path(&self.maildir(), name) {
            Err(e) => self.send(&format!("{tag} NO [CANNOT] {}", e.0)),
            Ok(_) if name.eq_ignore_ascii_case("INBOX") => {
                self.send(&format!("{tag} NO [ALREADYEXISTS] INBOX exists"))
            }
            Ok(path) if is_link(&path) => {
                self.send(&format!("{tag} NO [ALREADYEXISTS] {LINK_EXISTS}"))
            }
            Ok(path) if path.join("cur").is_dir() => {
                self.send(&format!("{tag} NO [ALREADYEXISTS] Mailbox exists"))
            }
            Ok(_) if count_folders(&self.maildir()) >= self.max_folders() => self.send(&format!(
                "{tag} NO [LIMIT] At most {} folders per user",
                self.max_folders()
            )),
            Ok(path) => match Folder::open_in(&self.maildir(), name)
                .and_then(|_| special_use::write(&path, uses))
            {
                Ok(()) => self.send(&format!("{tag} OK CREATE completed")),
                Err(e) => self.send(&format!("{tag} {}", failure("Cannot create", &e))),
            },
        }
    }

    fn max_folders(&self) -> usize {
        self.shared.config.limits.max_folders_per_user
    }

    /// Whether `adding` more bytes fit in the user's storage quota; else the tagged `NO
    /// [OVERQUOTA]` reply's text. File work: call off the async workers.
    pub(super) fn room_for(&self, adding: u64) -> Result<(), String> {
        let limit = self.shared.config.limits.max_mailbox_bytes_per_user;
        room_for(&self.maildir(), limit, adding).map_err(|e| failure("Mailbox full", &e))
    }

    pub(super) fn delete(&mut self, tag: &str, mailbox: &Mailbox<'_>) {
        let name = self.mailbox_name(mailbox);
        if name.eq_ignore_ascii_case("INBOX") {
            self.send(&format!("{tag} NO [CANNOT] INBOX cannot be deleted"));
            return;
        }
        if self.selected.as_ref().is_some_and(|s| s.name == name) {
            self.selected = None;
        }
        match folder_path(&self.maildir(), &name) {
            Err(e) => self.send(&format!("{tag} NO [CANNOT] {}", e.0)),
            Ok(path) if !path.join("cur").is_dir() => {
                self.send(&format!("{tag} NO [NONEXISTENT] No such mailbox"))
            }
            Ok(path) => match std::fs::remove_dir_all(&path) {
                Ok(()) => self.send(&format!("{tag} OK DELETE completed")),
                Err(e) => self.send(&format!("{tag} {}", failure("Cannot delete", &e))),
            },
        }
    }

    pub(super) fn rename(&mut self, tag: &str, from: &Mailbox<'_>, to: &Mailbox<'_>) {
        let maildir = self.maildir();
        let (from, to) = (self.mailbox_name(from), self.mailbox_name(to));
        let to = to.strip_suffix('/').unwrap_or(&to).to_string();
        if from.eq_ignore_ascii_case("INBOX") {
            let reply = self.rename_inbox(&to);
            return self.send(&format!("{tag} {reply}"));
        }
        match (folder_path(&maildir, &from), folder_path(&maildir, &to)) {
            (Ok(a), Ok(b))
                if !from.eq_ignore_ascii_case("INBOX") && a.join("cur").is_dir() && !b.exists() =>
            {
                // Children move with their parent: `.A.x` follows `.A` to `.B.x`.
                let children: Vec<String> = Tree::read(&maildir)
                    .folders
                    .into_iter()
                    .filter(|n| n.starts_with(&format!("{from}/")))
                    .collect();
                let mut result = std::fs::rename(&a, &b);
                for child in children {
                    let moved = format!("{to}{}", &child[from.len()..]);
                    if let (Ok(old), Ok(new)) =
                        (folder_path(&maildir, &child), folder_path(&maildir, &moved))
                    {
                        result = result.and_then(|()| std::fs::rename(old, new));
                    }
                }
                match result {
                    Ok(()) => self.send(&format!("{tag} OK RENAME completed")),
                    Err(e) => self.send(&format!("{tag} {}", failure("Cannot rename", &e))),
                }
            }
            (Err(e), _) | (_, Err(e)) => self.send(&format!("{tag} NO [CANNOT] {}", e.0)),
            (Ok(_), Ok(b)) if b.exists() => {
                self.send(&format!("{tag} NO [ALREADYEXISTS] {to} exists"))
            }
            _ => self.send(&format!("{tag} NO [NONEXISTENT] Cannot rename {from}")),
        }
    }

    /// RENAME of INBOX (RFC 9051 §6.3.6): its messages move to a new folder `to`, INBOX stays,
    /// empty. The new folder counts against `limits.max-folders-per-user` as a CREATE does.
    fn rename_inbox(&self, to: &str) -> String {
        let maildir = self.maildir();
        let path = match folder_path(&maildir, to) {
            Ok(path) => path,
            Err(e) => return format!("NO [CANNOT] {}", e.0),
        };
        if to.eq_ignore_ascii_case("INBOX") || path.exists() {
            return format!("NO [ALREADYEXISTS] {to} exists");
        }
        if count_folders(&maildir) >= self.max_folders() {
            return format!("NO [LIMIT] At most {} folders per user", self.max_folders());
        }
        let moved = Folder::open_in(&maildir, "INBOX").and_then(|inbox| {
            let target = Folder::open_in(&maildir, to)?;
            for entry in &inbox.scan(false)?.entries {
                match inbox.move_to(entry, &target) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // expunged meanwhile
                    done => drop(done?),
                }
            }
            Ok(())
        });
        match moved {
            Ok(()) => "OK RENAME completed".into(),
            Err(e) => failure("Cannot rename", &e),
        }
    }

    /// The subscribed names (file work, off the async workers).
    fn subscriptions(&self) -> Vec<String> {
        let maildir = self.maildir();
        crate::sys::blocking::run(|| subscriptions::read(&maildir))
    }

    pub(super) fn subscribe(&mut self, tag: &str, mailbox: &Mailbox<'_>, on: bool) {
        let name = self.mailbox_name(mailbox);
        let maildir = self.maildir();
        // Waits for the lock other programs (Dovecot) may hold: off the async workers.
        match crate::sys::blocking::run(|| subscriptions::set(&maildir, &name, on)) {
            Ok(()) => self.send(&format!("{tag} OK Done")),
            Err(e) => {
                let reply = failure("Cannot change the subscriptions", &e);
                self.send(&format!("{tag} {reply}"))
            }
        }
    }

    pub(super) fn lsub(&mut self, tag: &str, reference: &Mailbox<'_>, pattern: &ListMailbox<'_>) {
        let full = format!(
            "{}{}",
            self.reference_of(reference),
            self.pattern_of(&pattern_text(pattern))
        );
        if let Some(why) = pattern_refusal(std::slice::from_ref(&full)) {
            return self.send(&budget::refusal(tag, &why));
        }
        let Ok(lines) = self.lsub_lines(&full, &Work::new(budget::LIST_WORK)) else {
            return self.send(&budget::refusal(tag, &over_budget_text()));
        };
        for line in lines {
            self.send(&line);
        }
        self.send(&format!("{tag} OK LSUB completed"));
    }

    /// LIST, with the selection and return options of LIST-EXTENDED (RFC 5258), SPECIAL-USE
    /// (RFC 6154) and LIST-STATUS (RFC 5819) when `extended` holds them.
    pub(super) fn list(
        &mut self,
        tag: &str,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        extended: Option<&ListExtras>,
    ) {
        let plain = ListExtras {
            patterns: vec![pattern_text(pattern)],
            ..ListExtras::default()
        };
        let options = extended.unwrap_or(&plain);
        let request = match ListRequest::read(options) {
            Ok(request) => request,
            Err(why) => return self.send(&format!("{tag} BAD {why}")),
        };
        if extended.is_none() && options.patterns.iter().all(String::is_empty) {
            self.send("* LIST (\\Noselect) \"/\" \"\"");
            self.send(&format!("{tag} OK LIST completed"));
            return;
        }
        let reference = self.reference_of(reference);
        let patterns: Vec<String> = options
            .patterns
            .iter()
            .map(|p| format!("{reference}{}", self.pattern_of(p)))
            .collect();
        if let Some(why) = pattern_refusal(&patterns) {
            return self.send(&budget::refusal(tag, &why));
        }
        let _ = std::fs::create_dir_all(self.maildir());
        let tree = Tree::read(&self.maildir());
        let subscribed: BTreeSet<String> = self.subscriptions().into_iter().collect();
        let mut names: BTreeSet<String> = tree.folders.union(&tree.parents_only).cloned().collect();
        if request.subscribed_only {
            names.extend(subscribed.iter().cloned());
            names.extend(
                subscribed
                    .iter()
                    .flat_map(|n| parents(n).map(str::to_string)),
            );
        }
        // Matched once, within the command's budget, before anything is answered.
        let candidates = names
            .iter()
            .chain(subscribed.iter().filter(|_| request.subscribed_only));
        let Ok(matching) = matching_names(&patterns, candidates) else {
            return self.send(&budget::refusal(tag, &over_budget_text()));
        };
        let matches = |name: &str| matching.contains(name);
        let mut lines = Vec::new();
        for name in names.iter().filter(|n| matches(n)) {
            let exists = tree.folders.contains(name);
            let is_subscribed = subscribed.contains(name);
            let mut attributes: Vec<&str> = Vec::new();
            if !exists && !tree.parents_only.contains(name) {
                attributes.push("\\NonExistent");
            } else if !exists {
                attributes.push("\\Noselect");
            }
            if exists || tree.parents_only.contains(name) {
                attributes.push(if tree.has_children(name) {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                });
            }
            // A use given at CREATE, else the one the name gives.
            let mut uses = match folder_path(&self.maildir(), name) {
                Ok(path) if exists => special_use::read(&path),
                _ => Vec::new(),
            };
            if uses.is_empty() {
                uses.extend(
                    SPECIAL_USE
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, u)| *u),
                );
            }
            if uses.is_empty() && request.special_use_only {
                continue;
            }
            attributes.extend(uses);
            if request.show_subscribed && is_subscribed {
                attributes.push("\\Subscribed");
            }
            let mut extra = "";
            if request.subscribed_only && !is_subscribed {
                // RECURSIVEMATCH: a parent is listed for a subscribed descendant the patterns
                // do not reach themselves.
                let prefix = format!("{name}/");
                let hidden_child = subscribed
                    .iter()
                    .any(|s| s.starts_with(&prefix) && !matches(s));
                if !(request.recursive && hidden_child) {
                    continue;
                }
                extra = " (CHILDINFO (\"SUBSCRIBED\"))";
            }
            lines.push(format!(
                "* LIST ({}) \"/\" {}{extra}",
                attributes.join(" "),
                quoted(&self.shown_name(name))
            ));
            if !options.status.is_empty() && exists {
                if let Ok(folder) = Folder::open_in(&self.maildir(), name) {
                    if let Ok(snapshot) = folder.scan(false) {
                        let shown = self.shown_name(name);
                        lines.push(status_line(&shown, &snapshot, &options.status));
                    }
                }
            }
        }
        for line in lines {
            self.send(&line);
        }
        self.send(&format!("{tag} OK LIST completed"));
    }

    /// LSUB (RFC 3501 §6.3.9): subscribed names the pattern matches; a name the pattern
    /// matches only as the parent of subscribed ones (`%` stopping at a level) is `\Noselect`.
    fn lsub_lines(&self, pattern: &str, work: &Work) -> Result<Vec<String>, OverBudget> {
        let subscribed: BTreeSet<String> = self.subscriptions().into_iter().collect();
        let mut shown: Vec<(String, bool)> = Vec::new();
        for name in &subscribed {
            if wildcard_within(pattern, name, work)? {
                shown.push((name.clone(), true));
            }
        }
        for name in &subscribed {
            // Only where the pattern stops above the subscribed name: `*` reaches it itself.
            if wildcard_within(pattern, name, work)? {
                continue;
            }
            for parent in parents(name) {
                if wildcard_within(pattern, parent, work)?
                    && !subscribed.contains(parent)
                    && !shown.iter().any(|(n, _)| n == parent)
                {
                    shown.push((parent.to_string(), false));
                }
            }
        }
        shown.sort();
        Ok(shown
            .into_iter()
            .map(|(name, own)| {
                let attributes = if own { "" } else { "\\Noselect" };
                format!(
                    "* LSUB ({attributes}) \"/\" {}",
                    quoted(&self.shown_name(&name))
                )
            })
            .collect())
    }

    pub(super) fn status(&mut self, tag: &str, mailbox: &Mailbox<'_>, names: &[String]) {
        let (name, folder) = match self.folder(mailbox) {
            Ok(found) => found,
            Err(reply) => return self.send(&format!("{tag} {reply}")),
        };
        let snapshot = match folder.scan(false) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                return self.send(&format!("{tag} {}", failure("Cannot read the mailbox", &e)))
            }
        };
        let shown = self.shown_name(&name);
        self.send(&status_line(&shown, &snapshot, names));
        self.send(&format!("{tag} OK STATUS completed"));
    }

    /// APPEND; the tagged reply's text (sent by the caller after announcing the new message).
    pub(super) fn append(
        &mut self,
        mailbox: &Mailbox<'_>,
        system: Flags,
        keywords: &[String],
        date: Option<u64>,
        bytes: &[u8],
    ) -> String {
        // Refused before any parse of it, like at SMTP intake (its fields cost ~30 times
        // their bytes to every later reader).
        if crate::message::header::header_too_large(bytes) {
            return format!("NO [LIMIT] {}", crate::message::header::HEADER_TOO_LARGE);
        }
        let folder = match self.folder(mailbox) {
            Ok((_, folder)) => folder,
            Err(reply) => return reply,
        };
        if let Err(reply) = self.room_for(served_len(bytes)) {
            return reply;
        }
        match folder
            .append(bytes, system, keywords, date)
            .and_then(|uid| Ok((folder.uid_validity()?, uid)))
        {
            Ok((validity, uid)) => format!("OK [APPENDUID {validity} {uid}] APPEND completed"),
            Err(e) => failure("Cannot append", &e),
        }
    }
}

fn pattern_text(pattern: &ListMailbox<'_>) -> String {
    match pattern {
        ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
        ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
    }
}

/// `* STATUS name (ITEM n ...)` for the items named (upper case; unknown ones left out).
fn status_line(name: &str, snapshot: &Snapshot, items: &[String]) -> String {
    let count =
        |test: &dyn Fn(&MailEntry) -> bool| snapshot.entries.iter().filter(|e| test(e)).count();
    let values: Vec<String> = items
        .iter()
        .filter_map(|item| {
            let value = match item.as_str() {
                "MESSAGES" => snapshot.entries.len().to_string(),
                "RECENT" => count(&|e| e.recent).to_string(),
                "UIDNEXT" => snapshot.uid_next.to_string(),
                "UIDVALIDITY" => snapshot.uid_validity.to_string(),
                "UNSEEN" => count(&|e| !e.flags.contains('S')).to_string(),
                "HIGHESTMODSEQ" => snapshot.highest_modseq.to_string(),
                "SIZE" => snapshot
                    .entries
                    .iter()
                    .fold(0u64, |sum, e| sum.saturating_add(e.size))
                    .to_string(),
                "DELETED" => count(&|e| e.flags.contains('T')).to_string(),
                _ => return None,
            };
            Some(format!("{item} {value}"))
        })
        .collect();
    format!("* STATUS {} ({})", quoted(name), values.join(" "))
}

/// What a LIST asks for, from its LIST-EXTENDED options.
struct ListRequest {
    subscribed_only: bool,
    recursive: bool,
    special_use_only: bool,
    show_subscribed: bool,
}

impl ListRequest {
    fn read(options: &ListExtras) -> Result<ListRequest, String> {
        let has = |list: &[String], word: &str| list.iter().any(|w| w == word);
        for word in &options.selection {
            if !["SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"].contains(&word.as_str()) {
                return Err(format!("unknown LIST selection option {word}"));
            }
        }
        for word in &options.returns {
            if !["SUBSCRIBED", "CHILDREN", "SPECIAL-USE"].contains(&word.as_str()) {
                return Err(format!("unknown LIST return option {word}"));
            }
        }
        let subscribed_only = has(&options.selection, "SUBSCRIBED");
        let recursive = has(&options.selection, "RECURSIVEMATCH");
        // RFC 5258 §3: RECURSIVEMATCH needs a selection option it can apply to.
        if recursive && !subscribed_only {
            return Err("RECURSIVEMATCH needs SUBSCRIBED".into());
        }
        Ok(ListRequest {
            subscribed_only,
            recursive,
            special_use_only: has(&options.selection, "SPECIAL-USE"),
            show_subscribed: subscribed_only || has(&options.returns, "SUBSCRIBED"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{matching_names, parents, pattern_refusal, wildcard, OverBudget};
    use proptest::prelude::*;

    #[test]
    fn list_wildcards() {
        assert!(wildcard("*", "Archive/2026"));
        assert!(wildcard("%", "INBOX"));
        assert!(!wildcard("%", "Archive/2026"));
        assert!(wildcard("Archive/%", "Archive/2026"));
        assert!(wildcard("inbox", "INBOX"));
        assert!(!wildcard("Arch", "Archive"));
        assert!(wildcard("a**%%b", "axyb"));
        assert!(!wildcard("a%%b", "ax/yb"));
        assert!(wildcard("a%*b", "ax/yb"));
        assert!(wildcard("", ""));
        assert!(!wildcard("", "x"));
        assert!(pattern_refusal(&["*".repeat(60_000)]).is_some());
        assert!(pattern_refusal(&vec!["*".to_string(); 65]).is_some());
        assert!(pattern_refusal(&["Archive/%".to_string()]).is_none());
        // Many wildcards stay cheap.
        let pattern = format!("{}x", "*%".repeat(500));
        assert!(!wildcard(&pattern, &"a".repeat(200)));
    }

    /// The definition, by backtracking: slow, but obviously right on short inputs.
    fn reference(pattern: &[char], name: &[char]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some((&c, rest)) if c == '*' || c == '%' => (0..=name.len())
                .take_while(|&k| c == '*' || !name[..k].contains(&'/'))
                .any(|k| reference(rest, &name[k..])),
            Some((&c, rest)) => name
                .split_first()
                .is_some_and(|(&n, tail)| n.eq_ignore_ascii_case(&c) && reference(rest, tail)),
        }
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_the_definition(
            pattern in "[ab/*%]{0,10}",
            name in "[abAB/]{0,12}",
        ) {
            let p: Vec<char> = pattern.chars().collect();
            let n: Vec<char> = name.chars().collect();
            prop_assert_eq!(wildcard(&pattern, &name), reference(&p, &n));
        }
    }

    #[test]
    fn matching_is_budgeted_per_command() {
        // The shape that took minutes of CPU: 64 patterns of 1 KiB whose wildcards keep every
        // row alive, against 200 names of 200 characters.
        let pattern = format!("{}z", "a*".repeat(511));
        let patterns = vec![pattern; 64];
        let names: Vec<String> = (0..200)
            .map(|i| format!("{}{i:03}", "a".repeat(197)))
            .collect();
        assert_eq!(matching_names(&patterns, names.iter()), Err(OverBudget));
        // An ordinary LIST over the same names is well within it.
        let everything = matching_names(&["*".to_string()], names.iter()).expect("within");
        assert_eq!(everything.len(), 200);
        let tens = matching_names(&["*0".to_string()], names.iter()).expect("within");
        assert_eq!(tens.len(), 20);
    }

    #[test]
    fn parents_of_a_name() {
        assert_eq!(parents("A/B/C").collect::<Vec<_>>(), ["A", "A/B"]);
        assert_eq!(parents("A").count(), 0);
    }
}
