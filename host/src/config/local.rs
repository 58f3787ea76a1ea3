//! The `[local]` table: the domains delivered here, and where users, aliases and catch-alls
//! come from (the users file or SQL).

use std::path::PathBuf;

use serde::Deserialize;

/// Local delivery: which domains are ours and who lives there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LocalConfig {
    /// Domains delivered locally (`localhost` is always one).
    pub domains: Vec<String>,
    /// The users file (argon2 hashes); default `users.toml` in the data dir.
    pub users_file: Option<PathBuf>,
    /// address -> local addresses it delivers to.
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
    /// domain -> the local address that receives mail for unknown users of that domain.
    pub catch_all: std::collections::BTreeMap<String, String>,
    /// Users, aliases and domains from PostgreSQL (`postgres://user@host/db`) instead of the
    /// users file; added to the domains, aliases and catch-alls above.
    pub source: Option<String>,
    /// A file holding the database password (mode 600), instead of a password in the URL.
    pub source_password_file: Option<PathBuf>,
    /// How often the SQL tables are read again.
    pub refresh_secs: u64,
    /// Logins are refused (454 4.7.0, NO [UNAVAILABLE]) when the tables could not be read for
    /// this long; recipients are still accepted from the last read.
    pub stale_secs: u64,
    /// The SQL that reads each table (see the README for the default schema).
    pub queries: SqlQueries,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            domains: vec!["localhost".into()],
            users_file: None,
            aliases: Default::default(),
            catch_all: Default::default(),
            source: None,
            source_password_file: None,
            refresh_secs: 5,
            stale_secs: 60,
            queries: SqlQueries::default(),
        }
    }
}

/// The queries that read users, aliases, catch-alls and domains from SQL: each returns rows of
/// text columns, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SqlQueries {
    /// `name`
    pub domains: String,
    /// `address`, `password` (an argon2 PHC string)
    pub users: String,
    /// `address`, `target`
    pub aliases: String,
    /// `domain`, `target`
    pub catch_alls: String,
    /// `mailgate user add`: `$1` the address, `$2` the argon2 hash.
    pub add_user: String,
    /// `mailgate user remove`: `$1` the address.
    pub remove_user: String,
}

impl Default for SqlQueries {
    fn default() -> SqlQueries {
        SqlQueries {
            domains: "SELECT name FROM domains".into(),
            users: "SELECT address, password FROM users".into(),
            aliases: "SELECT address, target FROM aliases".into(),
            catch_alls: "SELECT domain, target FROM catch_alls".into(),
            add_user: "INSERT INTO users (address, password) VALUES ($1, $2)".into(),
            remove_user: "DELETE FROM users WHERE address = $1".into(),
        }
    }
}
