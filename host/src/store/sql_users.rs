//! Users, aliases, catch-alls and domains from PostgreSQL (`[local] source = "postgres://…"`),
//! so that every node of a site has the same users. The tables are read whole, every
//! `refresh-secs`, into the same in-memory `Users` the users file gives: a message's recipient
//! check costs no round trip, and a change made in SQL is seen within the refresh interval.
//! The queries are the config's (`[local.queries]`), so an existing schema can be used.
//!
//! The default schema, which `mailgate user add` creates when it is missing (with the default
//! queries):
//!
//! ```sql
//! CREATE TABLE domains    (name    text PRIMARY KEY);
//! CREATE TABLE users      (address text PRIMARY KEY, password text NOT NULL);  -- argon2 PHC
//! CREATE TABLE aliases    (address text NOT NULL, target text NOT NULL, PRIMARY KEY (address, target));
//! CREATE TABLE catch_alls (domain  text PRIMARY KEY, target text NOT NULL);
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::users::{Tables, UserDirectory};
use crate::config::SqlQueries;

pub const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS domains (name text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS users (address text PRIMARY KEY, password text NOT NULL);
CREATE TABLE IF NOT EXISTS aliases (address text NOT NULL, target text NOT NULL,
                                    PRIMARY KEY (address, target));
CREATE TABLE IF NOT EXISTS catch_alls (domain text PRIMARY KEY, target text NOT NULL);";

/// A user directory kept filled from `source`: read once now (a database that is down leaves
/// it unread, every recipient and login answered "try again later", until it answers), then
/// every `refresh-secs` by a task that ends with the directory. Rows whose names are invalid
/// or collide are refused when the tables are read (see `Users::build`).
pub async fn directory(
    source: SqlUsers,
    path: &std::path::Path,
    local: &crate::config::LocalConfig,
) -> Arc<UserDirectory> {
    let directory = Arc::new(UserDirectory::filled_later(path, local));
    let source = Arc::new(source);
    refresh(&directory, &source).await;
    let every = Duration::from_secs(local.refresh_secs.max(1));
    let weak = Arc::downgrade(&directory);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(directory) = weak.upgrade() else {
                return;
            };
            refresh(&directory, &source).await;
        }
    });
    directory
}

async fn refresh(directory: &UserDirectory, source: &SqlUsers) {
    match source.read().await {
        Ok(tables) => directory.install(tables),
        Err(e) => directory.read_failed(&e),
    }
}

/// How long connecting and each query may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL database holding users; one connection, opened on demand and again after a
/// failure.
pub struct SqlUsers {
    config: tokio_postgres::Config,
    queries: SqlQueries,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl SqlUsers {
    /// The database at `url`, with the password in `password_file` if one is named.
    pub fn new(
        url: &str,
        password_file: Option<&std::path::Path>,
        queries: &SqlQueries,
    ) -> Result<SqlUsers, String> {
        let mut config = url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| format!("[local] source: {e}"))?;
        if let Some(file) = password_file {
            config.password(crate::sys::secret::read(file)?);
        }
        Ok(SqlUsers {
            config,
            queries: queries.clone(),
            client: tokio::sync::Mutex::new(None),
        })
    }

    /// Every row of the four tables.
    pub async fn read(&self) -> Result<Tables, String> {
        let q = &self.queries;
        Ok(Tables {
            domains: self
                .rows(&q.domains, 1)
                .await?
                .into_iter()
                .map(|mut r| r.swap_remove(0))
                .collect(),
            users: pairs(self.rows(&q.users, 2).await?),
            apop: Vec::new(),
            aliases: pairs(self.rows(&q.aliases, 2).await?),
            catch_alls: pairs(self.rows(&q.catch_alls, 2).await?),
        })
    }

    /// The default schema's tables, where missing (only with the default queries: a site
    /// with queries of its own has its own schema).
    pub async fn ensure_schema(&self) -> Result<(), String> {
        if self.queries != SqlQueries::default() {
            return Ok(());
        }
        self.with_client(|client| async move { client.batch_execute(SCHEMA).await })
            .await
    }

    /// `mailgate user add` (the `add-user` statement).
    pub async fn add(&self, address: &str, hash: &str) -> Result<(), String> {
        let statement = &self.queries.add_user;
        self.with_client(|client| async move {
            (client.execute(statement.as_str(), &[&address, &hash]).await).map(|_| ())
        })
        .await
    }

    /// `mailgate user remove` (the `remove-user` statement): true if it removed a row.
    pub async fn remove(&self, address: &str) -> Result<bool, String> {
        let statement = &self.queries.remove_user;
        self.with_client(|client| async move {
            (client.execute(statement.as_str(), &[&address]).await).map(|n| n > 0)
        })
        .await
    }

    /// Runs `query`; each row as `columns` texts.
    async fn rows(&self, query: &str, columns: usize) -> Result<Vec<Vec<String>>, String> {
        let rows = self
            .with_client(|client| async move { client.query(query, &[]).await })
            .await?;
        rows.iter()
            .map(|row| {
                (0..columns)
                    .map(|i| row.try_get::<_, String>(i))
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(|e| format!("{query:?}: want {columns} text column(s): {e}"))
            })
            .collect()
    }

    /// Runs `work` on the connection (opened first if needed) within the deadline; a failed
    /// connection is dropped so that the next call opens a new one.
    async fn with_client<T, F, Fut>(&self, work: F) -> Result<T, String>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = {
            let mut slot = self.client.lock().await;
            match slot.as_ref() {
                Some(client) if !client.is_closed() => client.clone(),
                _ => {
                    let client = Arc::new(self.connect().await?);
                    *slot = Some(client.clone());
                    client
                }
            }
        };
        let failed = match tokio::time::timeout(TIMEOUT, work(client)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => format!("users database: {}", describe(&e)),
            Err(_) => format!("users database: no answer within {TIMEOUT:?}"),
        };
        *self.client.lock().await = None;
        Err(failed)
    }

    async fn connect(&self) -> Result<Client, String> {
        let connecting = self.config.connect(NoTls);
        let (client, connection) = match tokio::time::timeout(TIMEOUT, connecting).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(format!("users database: {}", describe(&e))),
            Err(_) => return Err(format!("users database: cannot connect within {TIMEOUT:?}")),
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("users database connection: {e}");
            }
        });
        Ok(client)
    }
}

/// The error with the server's message, when it sent one ("db error" alone says nothing).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {}", db.message()),
        None => e.to_string(),
    }
}

fn pairs(rows: Vec<Vec<String>>) -> Vec<(String, String)> {
    rows.into_iter()
        .filter_map(|mut r| {
            let second = r.pop()?;
            let first = r.pop()?;
            Some((first, second))
        })
        .collect()
}
