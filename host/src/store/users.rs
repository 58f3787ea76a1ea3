//! Local users: a TOML file of addresses and argon2 password hashes, plus aliases and
//! catch-alls from the config. Resolves a recipient to the mailboxes it delivers to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::names::{canonical_domain, NameError, UserName};
use crate::config::LocalConfig;

#[derive(Debug, Error)]
pub enum UserError {
    #[error("users file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{0:?} is not an address in a local domain (local domains: {1})")]
    NotLocal(String, String),
    #[error("user {0} already exists")]
    Exists(String),
    #[error("{given:?} is user {existing} already (names are compared in canonical form)")]
    Collides { given: String, existing: String },
    #[error("no user {0}")]
    Missing(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    /// address -> argon2 PHC string
    #[serde(default)]
    users: BTreeMap<String, String>,
    /// address -> APOP secret, for users added with `--apop` only: APOP (RFC 1939) needs the
    /// secret itself on the server, so it is kept apart and never created by default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    apop: BTreeMap<String, String>,
}

/// Rows read from a source of users: the users file, or SQL tables.
#[derive(Debug, Default)]
pub struct Tables {
    pub domains: Vec<String>,
    /// address, argon2 PHC string
    pub users: Vec<(String, String)>,
    /// address, APOP secret (users file only)
    pub apop: Vec<(String, String)>,
    /// address, target
    pub aliases: Vec<(String, String)>,
    /// domain, target
    pub catch_alls: Vec<(String, String)>,
}

/// A user row that serves no mailbox, as it was read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub address: String,
    pub hash: String,
    pub reason: String,
}

/// How far the users in service can be trusted to be complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// As the source says now (the users file, or the last SQL read succeeded).
    Current,
    /// The last read failed: the users of the last good read are served, but a name missing
    /// from them may have been added since, so it is not refused for good.
    Stale,
    /// The source has never been read: nothing is known.
    Unread,
}

/// Where mail to one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// Not a local domain: the relay's business.
    Remote,
    /// These users' Maildirs (never empty).
    Mailboxes(Vec<UserName>),
    /// A local domain, and nobody there receives it (a permanent answer).
    Unknown,
    /// The users cannot be told now (a temporary answer).
    Unavailable,
}

/// The users of the local domains.
#[derive(Debug, Clone)]
pub struct Users {
    path: PathBuf,
    users: BTreeMap<UserName, String>,
    apop: BTreeMap<UserName, String>,
    domains: Vec<String>,
    aliases: BTreeMap<UserName, Vec<UserName>>,
    catch_all: BTreeMap<String, UserName>,
    /// User rows that serve nothing (invalid names, collisions), kept to be reported and,
    /// for the users file, written back as they were.
    refused: Vec<Refused>,
    /// Domains, aliases and catch-alls that are not valid, and why.
    left_out: Vec<String>,
}

/// The argon2id PHC string stored for `password`.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// The canonical form of a user name given by a person (CLI, logins), see `store::names`.
pub fn canonical(address: &str) -> Result<UserName, UserError> {
    Ok(UserName::parse(address)?)
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// The user rows that may serve a mailbox, keyed by canonical name, and the others. A row
/// whose name is invalid is refused; rows whose names meet in one canonical name are all
/// refused, except the one spelled canonically if there is exactly one (so that a row
/// `Carol@…` added beside `carol@…` takes nothing from carol, and never serves her mail).
fn admit(rows: Vec<(String, String)>) -> (BTreeMap<UserName, String>, Vec<Refused>) {
    let mut groups: BTreeMap<UserName, Vec<(String, String)>> = BTreeMap::new();
    let mut refused = Vec::new();
    for (address, hash) in rows {
        match UserName::parse(&address) {
            Ok(name) => groups.entry(name).or_default().push((address, hash)),
            Err(e) => refused.push(Refused {
                address,
                hash,
                reason: e.reason.to_string(),
            }),
        }
    }
    let mut admitted = BTreeMap::new();
    for (name, mut rows) in groups {
        let exact = rows.iter().filter(|(a, _)| a == name.as_str()).count();
        let kept = (rows.len() == 1 || exact == 1).then(|| {
            rows.iter()
                .position(|(a, _)| rows.len() == 1 || a == name.as_str())
                .unwrap_or(0)
        });
        let reason = match kept {
            Some(at) => {
                let (_, hash) = rows.swap_remove(at);
                admitted.insert(name.clone(), hash);
                format!("its canonical form is that of user {name}")
            }
            None => format!("it and other rows all name {name}: none is used"),
        };
        refused.extend(rows.into_iter().map(|(address, hash)| Refused {
            address,
            hash,
            reason: reason.clone(),
        }));
    }
    (admitted, refused)
}

/// Largest users file read (some 300 000 users with Argon2 hashes).
const MAX_USERS_FILE: u64 = 64 << 20;

impl Users {
    /// Loads the users file (a missing file means no users yet).
    pub fn load(path: &Path, local: &LocalConfig) -> Result<Users, UserError> {
        use crate::config::file::{read_regular_text, Links};
        let file = match read_regular_text(path, MAX_USERS_FILE, Links::Follow) {
            Ok(text) => toml::from_str::<UsersFile>(&text).map_err(|e| UserError::File {
                path: path.to_path_buf(),
                reason: e.to_string().trim_end().to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => UsersFile::default(),
            Err(e) => {
                return Err(UserError::File {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        let rows = Tables {
            users: file.users.into_iter().collect(),
            apop: file.apop.into_iter().collect(),
            ..Tables::default()
        };
        Ok(Users::build(path, rows, local))
    }

    /// The users of `rows` (from the users file or SQL) with the config's domains, aliases and
    /// catch-alls added. `path` is where `add` and `remove` write (the users file). Rows that
    /// cannot serve a mailbox are set aside (see [`Users::refused`]); aliases and catch-alls
    /// naming something that is not a valid address are left out (see [`Users::left_out`]).
    pub fn build(path: &Path, rows: Tables, local: &LocalConfig) -> Users {
        let mut left_out = Vec::new();
        let mut domains: Vec<String> = (local.domains.iter())
            .chain(&rows.domains)
            .filter_map(|d| match canonical_domain(d) {
                Ok(d) => Some(d),
                Err(why) => {
                    left_out.push(format!("local domain {d:?}: {why}"));
                    None
                }
            })
            .collect();
        domains.push("localhost".into());
        domains.sort();
        domains.dedup();
        let (users, refused) = admit(rows.users);
        let mut aliases: BTreeMap<UserName, Vec<UserName>> = BTreeMap::new();
        let configured = local
            .aliases
            .iter()
            .flat_map(|(a, t)| t.iter().map(move |x| (a, x)));
        for (address, target) in configured.chain(rows.aliases.iter().map(|(a, t)| (a, t))) {
            match (UserName::parse(address), UserName::parse(target)) {
                (Ok(a), Ok(t)) => aliases.entry(a).or_default().push(t),
                (Err(e), _) | (_, Err(e)) => {
                    left_out.push(format!("alias {address:?} -> {target:?}: {e}"))
                }
            }
        }
        let catch_all = (local.catch_all.iter())
            .chain(rows.catch_alls.iter().map(|(d, t)| (d, t)))
            .filter_map(|(d, t)| match (canonical_domain(d), UserName::parse(t)) {
                (Ok(d), Ok(t)) => Some((d, t)),
                (Err(why), _) => {
                    left_out.push(format!("catch-all of {d:?}: {why}"));
                    None
                }
                (_, Err(e)) => {
                    left_out.push(format!("catch-all of {d:?}: {e}"));
                    None
                }
            })
            .collect();
        let apop = (rows.apop.into_iter())
            .filter_map(|(a, s)| Some((UserName::parse(&a).ok()?, s)))
            .filter(|(a, _)| users.contains_key(a))
            .collect();
        Users {
            path: path.to_path_buf(),
            users,
            apop,
            domains,
            aliases,
            catch_all,
            refused,
            left_out,
        }
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        canonical_domain(domain).is_ok_and(|d| self.domains.contains(&d))
    }

    /// The users that mail to `address` goes to: the user itself, an alias's targets (one
    /// level), or the domain's catch-all. Empty when nobody receives it.
    pub fn resolve(&self, address: &str) -> Vec<UserName> {
        if let Ok(name) = UserName::parse(address) {
            if self.users.contains_key(&name) {
                return vec![name];
            }
            if let Some(targets) = self.aliases.get(&name) {
                return targets
                    .iter()
                    .filter(|t| self.users.contains_key(*t))
                    .cloned()
                    .collect();
            }
        }
        let domain = canonical_domain(domain_of(address)).unwrap_or_default();
        match self.catch_all.get(&domain) {
            Some(target) if self.users.contains_key(target) => vec![target.clone()],
            _ => Vec::new(),
        }
    }

    /// Where mail to `address` goes, given how far these users can be trusted: a recipient
    /// is only refused for good on users that are current; a known one is served from the
    /// last good read; while the source has never been read, nothing is decided.
    pub fn recipient(&self, address: &str, standing: Standing) -> Recipient {
        if standing == Standing::Unread {
            return Recipient::Unavailable;
        }
        if !self.is_local_domain(domain_of(address)) {
            return Recipient::Remote;
        }
        let targets = self.resolve(address);
        match (targets.is_empty(), standing) {
            (false, _) => Recipient::Mailboxes(targets),
            (true, Standing::Current) => Recipient::Unknown,
            (true, _) => Recipient::Unavailable,
        }
    }

    /// Checks a password; the user's canonical name if it matches. None for unknown users and
    /// names that are not valid (after the same work, so timing says little).
    pub fn login(&self, address: &str, password: &str) -> Option<UserName> {
        const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q0Hf1z5jDZr9n4pNvY6m0pP1m2K3iSx7QmS6s6Vd0XU";
        let name = UserName::parse(address).ok();
        let stored = name.as_ref().and_then(|n| self.users.get(n));
        let hash = stored.map_or(DUMMY, String::as_str);
        let ok = PasswordHash::new(hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        name.filter(|_| ok && stored.is_some())
    }

    /// Checks a password (see [`Users::login`]).
    pub fn verify(&self, address: &str, password: &str) -> bool {
        self.login(address, password).is_some()
    }

    pub fn list(&self) -> impl Iterator<Item = &UserName> {
        self.users.keys()
    }

    /// The user rows that serve nothing, and why.
    pub fn refused(&self) -> &[Refused] {
        &self.refused
    }

    /// The domains, aliases and catch-alls left out because they are not valid, and why.
    pub fn left_out(&self) -> &[String] {
        &self.left_out
    }

    /// The APOP secret of a user added with `--apop`, with the user's canonical name.
    pub fn apop_secret(&self, address: &str) -> Option<(UserName, &str)> {
        let name = UserName::parse(address).ok()?;
        let secret = self.apop.get(&name)?;
        Some((name, secret.as_str()))
    }

    /// Adds a user who may also log in with POP3 APOP (the secret is stored as given).
    pub fn add_with_apop(&mut self, address: &str, password: &str) -> Result<UserName, UserError> {
        let name = self.new_user(address)?;
        self.apop.insert(name.clone(), password.to_string());
        self.add(address, password).inspect_err(|_| {
            self.apop.remove(&name);
        })
    }

    /// Adds a user; the canonical name it was added under.
    pub fn add(&mut self, address: &str, password: &str) -> Result<UserName, UserError> {
        let name = self.new_user(address)?;
        let hash = hash_password(password)?;
        self.users.insert(name.clone(), hash);
        self.save()?;
        Ok(name)
    }

    /// The canonical name of `address` if it can be a new user: a valid address, in a local
    /// domain, not the name of an existing user in any spelling.
    pub fn new_user(&self, address: &str) -> Result<UserName, UserError> {
        let name = canonical(address)?;
        if !self.is_local_domain(name.domain()) {
            return Err(UserError::NotLocal(
                name.to_string(),
                self.domains.join(", "),
            ));
        }
        if self.users.contains_key(&name) {
            if address == name.as_str() {
                return Err(UserError::Exists(name.to_string()));
            }
            return Err(UserError::Collides {
                given: address.to_string(),
                existing: name.to_string(),
            });
        }
        Ok(name)
    }

    /// Removes a user (any spelling), or a refused row by its name exactly as stored.
    pub fn remove(&mut self, address: &str) -> Result<(), UserError> {
        if let Some(at) = self.refused.iter().position(|r| r.address == address) {
            self.refused.remove(at);
            return self.save();
        }
        let name = canonical(address)?;
        if self.users.remove(&name).is_none() {
            return Err(UserError::Missing(name.to_string()));
        }
        self.apop.remove(&name);
        self.save()
    }

    /// Writes the file atomically (temp file, fsync, rename); refused rows are kept as they
    /// were, for their owner to see and remove.
    fn save(&self) -> Result<(), UserError> {
        let err = |e: std::io::Error| UserError::File {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let text = toml::to_string(&UsersFile {
            users: (self.users.iter())
                .map(|(a, h)| (a.to_string(), h.clone()))
                .chain(
                    self.refused
                        .iter()
                        .map(|r| (r.address.clone(), r.hash.clone())),
                )
                .collect(),
            apop: (self.apop.iter())
                .map(|(a, s)| (a.to_string(), s.clone()))
                .collect(),
        })
        .map_err(|e| UserError::File {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.path.with_extension("toml.tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // 0600: password hashes, and APOP secrets in plain text.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            // An older file (or an umask-less create) may have left wider bits.
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(err)?;
            file.write_all(text.as_bytes()).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

/// The users as the running server sees them. From the users file: the file's identity (inode,
/// size, modification time) is looked at on each use and the file reloaded when it changed, so
/// `mailgate user add` takes effect for the next command, with no restart and no window in
/// which a user just added is refused; a file that fails to load keeps the previous users in service (and says why in the
/// log). From SQL: the tables are read every `refresh-secs` by a task of their own.
///
/// No outage of the source turns into a permanent answer. Until the first good read nothing is
/// decided (every recipient and login is answered "try again later"); after a failed read the
/// users of the last good one keep receiving mail, an address missing from them is answered
/// "try again later" (it may have been added since), and logins go on from them for
/// `stale-secs`, then are answered "try again later" too.
pub struct UserDirectory {
    path: PathBuf,
    local: LocalConfig,
    current: std::sync::RwLock<(Option<FileStamp>, std::sync::Arc<Users>)>,
    /// When the users come from SQL: when the tables were last read.
    sql_read: Option<std::sync::Mutex<Option<std::time::Instant>>>,
    /// The last read (of the file or the tables) failed.
    failing: std::sync::atomic::AtomicBool,
    /// The refusals already logged, so that each is said once, not at every read.
    reported: std::sync::Mutex<(Vec<Refused>, Vec<String>)>,
    /// Counts the reads that ended an outage (the first read of SQL among them): what waits
    /// for the users (mail deferred meanwhile, the readiness signal) watches it.
    recovered: tokio::sync::watch::Sender<u64>,
}

impl UserDirectory {
    pub fn open(path: &Path, local: &LocalConfig) -> Result<UserDirectory, UserError> {
        let users = Users::load(path, local)?;
        let directory = UserDirectory::with(path, local, users, None);
        directory.report_refused(&directory.get_current());
        Ok(directory)
    }

    /// A directory filled from elsewhere (SQL, see `sql_users::directory`): empty and
    /// unread (every answer temporary) until the first [`UserDirectory::install`].
    pub fn filled_later(path: &Path, local: &LocalConfig) -> UserDirectory {
        let users = Users::build(path, Tables::default(), local);
        UserDirectory::with(path, local, users, Some(std::sync::Mutex::new(None)))
    }

    fn with(
        path: &Path,
        local: &LocalConfig,
        users: Users,
        sql_read: Option<std::sync::Mutex<Option<std::time::Instant>>>,
    ) -> UserDirectory {
        UserDirectory {
            path: path.to_path_buf(),
            local: local.clone(),
            current: std::sync::RwLock::new((modified(path), std::sync::Arc::new(users))),
            sql_read,
            failing: std::sync::atomic::AtomicBool::new(false),
            reported: std::sync::Mutex::new((Vec::new(), Vec::new())),
            recovered: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes each time the users become readable again after an outage (or are read for
    /// the first time).
    pub fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    /// Resolves once the users have been read (at once from a users file, or once SQL
    /// answered).
    pub async fn read_once(&self) {
        let mut recoveries = self.recoveries();
        while self.standing() == Standing::Unread {
            if recoveries.changed().await.is_err() {
                return;
            }
        }
    }

    /// The users are readable again: whatever waited for them may go on.
    fn recovered(&self, was: Standing) {
        if was != Standing::Current {
            self.recovered.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Puts the users of freshly read `tables` in service.
    pub fn install(&self, tables: Tables) {
        let was = self.standing();
        let users = std::sync::Arc::new(Users::build(&self.path, tables, &self.local));
        self.report_refused(&users);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (None, users);
        self.failing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(read) = &self.sql_read {
            let mut read = read.lock().unwrap_or_else(|e| e.into_inner());
            if read.is_none() {
                tracing::info!("users read from the database");
            }
            *read = Some(std::time::Instant::now());
        }
        self.recovered(was);
    }

    /// A read of the source failed: the users in service become stale.
    pub fn read_failed(&self, reason: &str) {
        let was = self
            .failing
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        if !was {
            match self.standing() {
                Standing::Unread => tracing::warn!(
                    "users source unavailable, answering every recipient and login \"try again later\" until it is read: {reason}"
                ),
                _ => tracing::warn!("users source unavailable, keeping the previous users: {reason}"),
            }
        } else {
            tracing::debug!("users source still unavailable: {reason}");
        }
    }

    /// Logs each refused user row, and each entry left out, once (they are read again at
    /// every refresh).
    fn report_refused(&self, users: &Users) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for row in users.refused() {
            if !reported.0.contains(row) {
                tracing::warn!(
                    user = row.address,
                    "user refused, it serves no mailbox: {}",
                    row.reason
                );
            }
        }
        for entry in users.left_out() {
            if !reported.1.contains(entry) {
                tracing::warn!("left out, not a valid address or domain: {entry}");
            }
        }
        *reported = (users.refused().to_vec(), users.left_out().to_vec());
    }

    /// How far the users in service can be trusted (see [`Standing`]).
    pub fn standing(&self) -> Standing {
        if let Some(read) = &self.sql_read {
            if read.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
                return Standing::Unread;
            }
        }
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            Standing::Stale
        } else {
            Standing::Current
        }
    }

    /// Whether logins can be checked: always from the file; from SQL, while the tables were
    /// read within `stale-secs`.
    pub fn available(&self) -> bool {
        let Some(read) = &self.sql_read else {
            return true;
        };
        let stale = std::time::Duration::from_secs(self.local.stale_secs);
        let last = *read.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|at| at.elapsed() <= stale)
    }

    /// What `/healthz` says of the users: fine, or why not (never read; logins refused since
    /// the last good read is older than `stale-secs`).
    pub fn health(&self) -> Result<(), String> {
        match self.standing() {
            Standing::Unread => Err("users source not read yet".into()),
            _ if !self.available() => Err(format!(
                "users source unavailable for more than {} s",
                self.local.stale_secs
            )),
            _ => Ok(()),
        }
    }

    /// Where mail to `address` goes, by the current users and their standing.
    pub fn recipient(&self, address: &str) -> Recipient {
        self.get().recipient(address, self.standing())
    }

    /// The current users.
    pub fn get(&self) -> std::sync::Arc<Users> {
        if self.sql_read.is_none() {
            self.refresh();
        }
        self.get_current()
    }

    fn get_current(&self) -> std::sync::Arc<Users> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    fn refresh(&self) {
        let stamp = modified(&self.path);
        if stamp == self.current.read().unwrap_or_else(|e| e.into_inner()).0 {
            return;
        }
        match Users::load(&self.path, &self.local) {
            Ok(users) => {
                tracing::info!("reloaded users from {}", self.path.display());
                self.report_refused(&users);
                let was = self.standing();
                self.failing
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    (stamp, std::sync::Arc::new(users));
                self.recovered(was);
            }
            Err(e) => {
                self.read_failed(&e.to_string());
                // Not again until the file changes once more.
                self.current.write().unwrap_or_else(|e| e.into_inner()).0 = stamp;
            }
        }
    }
}

/// What tells one version of the users file from another. The modification time alone does
/// not: two writes within one tick of the file system's clock leave it unchanged, and every
/// save is a rename, so the inode changes with each.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

fn modified(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        inode: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalConfig {
        let mut local = LocalConfig {
            domains: vec!["example.org".into()],
            ..LocalConfig::default()
        };
        local.aliases.insert(
            "team@example.org".into(),
            vec!["alice@example.org".into(), "bob@example.org".into()],
        );
        local
            .catch_all
            .insert("example.org".into(), "alice@example.org".into());
        local
    }

    fn names(found: Vec<UserName>) -> Vec<String> {
        found.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn users_aliases_catch_all_and_passwords() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.toml");
        let mut users = Users::load(&path, &local()).expect("load");
        users.add("Alice@Example.org", "secret").expect("add");
        users.add("bob@example.org", "hunter2").expect("add");
        assert!(matches!(
            users.add("eve@elsewhere.test", "x"),
            Err(UserError::NotLocal(..))
        ));
        let users = Users::load(&path, &local()).expect("reload");
        assert!(users.verify("alice@example.org", "secret"));
        assert_eq!(
            users
                .login("ALICE@example.ORG", "secret")
                .map(|n| n.to_string()),
            Some("alice@example.org".into())
        );
        assert!(!users.verify("alice@example.org", "wrong"));
        assert!(!users.verify("nobody@example.org", "secret"));
        assert_eq!(names(users.resolve("BOB@example.org")), ["bob@example.org"]);
        assert_eq!(
            names(users.resolve("team@example.org")),
            ["alice@example.org", "bob@example.org"]
        );
        assert_eq!(
            names(users.resolve("whoever@example.org")),
            ["alice@example.org"],
            "catch-all"
        );
        assert!(users.resolve("x@localhost").is_empty());
        assert!(users.is_local_domain("LOCALHOST"));
    }

    #[test]
    fn a_new_name_must_be_valid_and_unlike_every_existing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut users = Users::load(&dir.path().join("users.toml"), &local()).expect("load");
        users.add("carol@example.org", "pw").expect("add");
        for taken in ["Carol@example.org", "CAROL@EXAMPLE.ORG"] {
            assert!(
                matches!(users.add(taken, "x"), Err(UserError::Collides { .. })),
                "{taken}"
            );
        }
        assert!(matches!(
            users.add("carol@example.org", "x"),
            Err(UserError::Exists(_))
        ));
        for invalid in [
            ".carol@example.org",
            "carol.@example.org",
            "a/b@example.org",
        ] {
            assert!(
                matches!(users.add(invalid, "x"), Err(UserError::Name(_))),
                "{invalid}"
            );
        }
    }

    #[test]
    fn rows_that_are_invalid_or_collide_serve_no_mailbox() {
        let hash = hash_password("carol's").expect("hash");
        let other = hash_password("mallory's").expect("hash");
        let rows = Tables {
            users: vec![
                ("carol@example.org".into(), hash),
                ("Carol@example.org".into(), other.clone()),
                (".carol@example.org".into(), other.clone()),
                ("Dave@example.org".into(), other.clone()),
                ("DAVE@example.org".into(), other.clone()),
                ("Erin@Example.org".into(), other),
            ],
            aliases: vec![("list@example.org".into(), ".carol@example.org".into())],
            ..Tables::default()
        };
        let users = Users::build(Path::new("unused"), rows, &local());
        assert!(users.verify("carol@example.org", "carol's"));
        assert!(!users.verify("Carol@example.org", "mallory's"));
        assert!(!users.verify(".carol@example.org", "mallory's"));
        assert!(!users.verify("dave@example.org", "mallory's"), "ambiguous");
        assert!(
            users.verify("erin@example.org", "mallory's"),
            "one spelling"
        );
        assert!(
            users.resolve("list@example.org").is_empty(),
            "an alias to an invalid name delivers nowhere"
        );
        assert_eq!(users.left_out().len(), 1, "{:?}", users.left_out());
        assert!(users.left_out()[0].contains("starts with a dot"));
        let refused: Vec<&str> = users.refused().iter().map(|r| r.address.as_str()).collect();
        assert_eq!(refused.len(), 4, "{refused:?}");
        for row in [
            "Carol@example.org",
            ".carol@example.org",
            "Dave@example.org",
            "DAVE@example.org",
        ] {
            assert!(refused.contains(&row), "{row}: {refused:?}");
        }
    }

    #[test]
    fn only_current_users_refuse_a_recipient_for_good() {
        let rows = Tables {
            users: vec![("carol@example.org".into(), "x".into())],
            ..Tables::default()
        };
        let mut config = local();
        config.catch_all.clear();
        let users = Users::build(Path::new("unused"), rows, &config);
        let known = Recipient::Mailboxes(vec![UserName::parse("carol@example.org").expect("ok")]);
        assert_eq!(
            users.recipient("carol@example.org", Standing::Current),
            known
        );
        assert_eq!(users.recipient("carol@example.org", Standing::Stale), known);
        assert_eq!(
            users.recipient("x@example.org", Standing::Current),
            Recipient::Unknown
        );
        assert_eq!(
            users.recipient("x@example.org", Standing::Stale),
            Recipient::Unavailable
        );
        assert_eq!(
            users.recipient("x@far.test", Standing::Stale),
            Recipient::Remote
        );
        for address in ["carol@example.org", "x@far.test"] {
            assert_eq!(
                users.recipient(address, Standing::Unread),
                Recipient::Unavailable
            );
        }
    }

    #[test]
    fn an_unread_directory_decides_nothing_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let directory = UserDirectory::filled_later(&dir.path().join("u.toml"), &local());
        assert_eq!(directory.standing(), Standing::Unread);
        assert!(!directory.available());
        assert!(directory.health().is_err());
        directory.read_failed("connection refused");
        assert_eq!(directory.standing(), Standing::Unread);
        directory.install(Tables::default());
        assert_eq!(directory.standing(), Standing::Current);
        assert!(directory.available() && directory.health().is_ok());
        directory.read_failed("connection refused");
        assert_eq!(directory.standing(), Standing::Stale);
    }

    #[tokio::test]
    async fn each_end_of_an_outage_is_announced_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let directory = UserDirectory::filled_later(&dir.path().join("u.toml"), &local());
        let recoveries = directory.recoveries();
        let first =
            tokio::time::timeout(std::time::Duration::from_millis(50), directory.read_once());
        assert!(first.await.is_err(), "not read yet");
        directory.read_failed("connection refused");
        assert_eq!(*recoveries.borrow(), 0);
        directory.install(Tables::default());
        assert_eq!(*recoveries.borrow(), 1, "the first read");
        directory.read_once().await;
        directory.install(Tables::default());
        assert_eq!(
            *recoveries.borrow(),
            1,
            "a read while current ends no outage"
        );
        directory.read_failed("connection refused");
        directory.install(Tables::default());
        assert_eq!(*recoveries.borrow(), 2, "back after a failed read");
    }
}
