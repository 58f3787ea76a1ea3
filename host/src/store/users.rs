//! Local users: a TOML file of addresses and argon2 password hashes, plus aliases and
//! catch-alls from the config. Resolves a recipient to the mailboxes it delivers to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::LocalConfig;

#[derive(Debug, Error)]
pub enum UserError {
    #[error("users file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0:?} is not an address in a local domain (local domains: {1})")]
    NotLocal(String, String),
    #[error("user {0} already exists")]
    Exists(String),
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

/// The users of the local domains.
#[derive(Debug, Clone)]
pub struct Users {
    path: PathBuf,
    users: BTreeMap<String, String>,
    apop: BTreeMap<String, String>,
    domains: Vec<String>,
    aliases: BTreeMap<String, Vec<String>>,
    catch_all: BTreeMap<String, String>,
}

/// The argon2id PHC string stored for `password`.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// Lower-cases the domain; local parts are compared case-insensitively too (like most MTAs).
pub fn normalise(address: &str) -> String {
    address.to_ascii_lowercase()
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
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
    /// catch-alls added. `path` is where `add` and `remove` write (the users file).
    pub fn build(path: &Path, rows: Tables, local: &LocalConfig) -> Users {
        let mut domains: Vec<String> = (local.domains.iter())
            .chain(&rows.domains)
            .map(|d| d.to_ascii_lowercase())
            .collect();
        domains.push("localhost".into());
        domains.sort();
        domains.dedup();
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let configured = local
            .aliases
            .iter()
            .flat_map(|(a, t)| t.iter().map(move |x| (a, x)));
        for (address, target) in configured.chain(rows.aliases.iter().map(|(a, t)| (a, t))) {
            aliases
                .entry(normalise(address))
                .or_default()
                .push(normalise(target));
        }
        Users {
            path: path.to_path_buf(),
            users: (rows.users.into_iter())
                .map(|(a, h)| (normalise(&a), h))
                .collect(),
            apop: (rows.apop.into_iter())
                .map(|(a, s)| (normalise(&a), s))
                .collect(),
            domains,
            aliases,
            catch_all: (local.catch_all.iter())
                .chain(rows.catch_alls.iter().map(|(d, t)| (d, t)))
                .map(|(d, t)| (d.to_ascii_lowercase(), normalise(t)))
                .collect(),
        }
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The users that mail to `address` goes to: the user itself, an alias's targets (one
    /// level), or the domain's catch-all. Empty when nobody receives it.
    pub fn resolve(&self, address: &str) -> Vec<String> {
        let address = normalise(address);
        if self.users.contains_key(&address) {
            return vec![address];
        }
        if let Some(targets) = self.aliases.get(&address) {
            return targets
                .iter()
                .filter(|t| self.users.contains_key(*t))
                .cloned()
                .collect();
        }
        match self.catch_all.get(domain_of(&address)) {
            Some(target) if self.users.contains_key(target) => vec![target.clone()],
            _ => Vec::new(),
        }
    }

    /// Checks a password; false for unknown users (after the same work, so timing says little).
    pub fn verify(&self, address: &str, password: &str) -> bool {
        const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q0Hf1z5jDZr9n4pNvY6m0pP1m2K3iSx7QmS6s6Vd0XU";
        let stored = self.users.get(&normalise(address));
        let hash = stored.map_or(DUMMY, String::as_str);
        let ok = PasswordHash::new(hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && stored.is_some()
    }

    pub fn list(&self) -> impl Iterator<Item = &String> {
        self.users.keys()
    }

    /// The APOP secret of a user added with `--apop`.
    pub fn apop_secret(&self, address: &str) -> Option<&str> {
        self.apop.get(&normalise(address)).map(String::as_str)
    }

    /// Adds a user who may also log in with POP3 APOP (the secret is stored as given).
    pub fn add_with_apop(&mut self, address: &str, password: &str) -> Result<(), UserError> {
        self.apop.insert(normalise(address), password.to_string());
        self.add(address, password).inspect_err(|_| {
            self.apop.remove(&normalise(address));
        })
    }

    pub fn add(&mut self, address: &str, password: &str) -> Result<(), UserError> {
        let address = self.new_user(address)?;
        let hash = hash_password(password)?;
        self.users.insert(address, hash);
        self.save()
    }

    /// `address`, normalised, if it can be a new user: in a local domain, not taken yet.
    pub fn new_user(&self, address: &str) -> Result<String, UserError> {
        let address = normalise(address);
        if !address.contains('@') || !self.is_local_domain(domain_of(&address)) {
            return Err(UserError::NotLocal(address, self.domains.join(", ")));
        }
        if self.users.contains_key(&address) {
            return Err(UserError::Exists(address));
        }
        Ok(address)
    }

    pub fn remove(&mut self, address: &str) -> Result<(), UserError> {
        let address = normalise(address);
        if self.users.remove(&address).is_none() {
            return Err(UserError::Missing(address));
        }
        self.apop.remove(&address);
        self.save()
    }

    /// Writes the file atomically (temp file, fsync, rename).
    fn save(&self) -> Result<(), UserError> {
        let err = |e: std::io::Error| UserError::File {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let text = toml::to_string(&UsersFile {
            users: self.users.clone(),
            apop: self.apop.clone(),
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

/// The users as the running server sees them. From the users file: the file is checked at most
/// twice a second and reloaded when it changed, so `mailgate user add` takes effect without a
/// restart; a file that fails to load keeps the previous users in service (and says why in the
/// log). From SQL: the tables are read every `refresh-secs` by a task of their own; while they
/// cannot be read the last users stay in service for mail, and after `stale-secs` logins are
/// refused as temporarily unavailable.
pub struct UserDirectory {
    path: PathBuf,
    local: LocalConfig,
    current: std::sync::RwLock<(Option<std::time::SystemTime>, std::sync::Arc<Users>)>,
    checked: std::sync::Mutex<std::time::Instant>,
    /// When the users come from SQL: when the tables were last read.
    sql_read: Option<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl UserDirectory {
    pub fn open(path: &Path, local: &LocalConfig) -> Result<UserDirectory, UserError> {
        let users = Users::load(path, local)?;
        Ok(UserDirectory {
            path: path.to_path_buf(),
            local: local.clone(),
            current: std::sync::RwLock::new((modified(path), std::sync::Arc::new(users))),
            checked: std::sync::Mutex::new(std::time::Instant::now()),
            sql_read: None,
        })
    }

    /// A directory filled from elsewhere (SQL, see `sql_users::directory`): empty and
    /// unavailable for logins until the first [`UserDirectory::install`].
    pub fn filled_later(path: &Path, local: &LocalConfig) -> UserDirectory {
        UserDirectory {
            path: path.to_path_buf(),
            local: local.clone(),
            current: std::sync::RwLock::new((
                None,
                std::sync::Arc::new(Users::build(path, Tables::default(), local)),
            )),
            checked: std::sync::Mutex::new(std::time::Instant::now()),
            sql_read: Some(std::sync::Mutex::new(None)),
        }
    }

    /// Puts the users of freshly read `tables` in service.
    pub fn install(&self, tables: Tables) {
        let users = std::sync::Arc::new(Users::build(&self.path, tables, &self.local));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (None, users);
        if let Some(read) = &self.sql_read {
            let mut read = read.lock().unwrap_or_else(|e| e.into_inner());
            if read.is_none() {
                tracing::info!("users read from the database");
            }
            *read = Some(std::time::Instant::now());
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

    /// The current users.
    pub fn get(&self) -> std::sync::Arc<Users> {
        if self.sql_read.is_none() {
            self.refresh();
        }
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    fn refresh(&self) {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.elapsed() < std::time::Duration::from_millis(500) {
                return;
            }
            *checked = std::time::Instant::now();
        }
        let stamp = modified(&self.path);
        if stamp == self.current.read().unwrap_or_else(|e| e.into_inner()).0 {
            return;
        }
        match Users::load(&self.path, &self.local) {
            Ok(users) => {
                tracing::info!("reloaded users from {}", self.path.display());
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    (stamp, std::sync::Arc::new(users));
            }
            Err(e) => tracing::warn!("keeping the previous users: {e}"),
        }
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
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
        assert!(!users.verify("alice@example.org", "wrong"));
        assert!(!users.verify("nobody@example.org", "secret"));
        assert_eq!(users.resolve("BOB@example.org"), vec!["bob@example.org"]);
        assert_eq!(
            users.resolve("team@example.org"),
            vec!["alice@example.org", "bob@example.org"]
        );
        assert_eq!(
            users.resolve("whoever@example.org"),
            vec!["alice@example.org"],
            "catch-all"
        );
        assert!(users.resolve("x@localhost").is_empty());
        assert!(users.is_local_domain("LOCALHOST"));
    }
}
