//! What the sessions of every protocol share — the config, the plugins and their services,
//! the users, TLS — and what they all do with it: check passwords and count failed logins.
//! Each protocol gets this and only what it needs besides (see `smtp::Smtp`, `imap::Imap`,
//! `pop3::Pop3`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Protocol};
use crate::net::limits::{AuthBudget, KeySlot, LoginWindow, PerIp, PerKey};
use crate::plugin::{ActivePlugins, Services};
use crate::store::names::UserName;
use crate::store::users::UserDirectory;
use crate::telemetry::metrics;

/// The part of the gateway every session sees.
pub struct SessionContext {
    pub config: Arc<Config>,
    pub plugins: Arc<ActivePlugins>,
    pub services: Services,
    pub users: Arc<UserDirectory>,
    pub tls: Option<TlsAcceptor>,
    /// Password checks running at once (argon2 takes ~19 MiB and milliseconds each).
    password_checks: Arc<Semaphore>,
    /// Failed logins per client address, across connections and protocols.
    auth_budget: AuthBudget,
    /// IMAP and POP3 connections per client address that have not logged in yet.
    waiting_for_login: Arc<PerIp>,
    /// Logged-in connections per protocol and user.
    logged_in: Arc<PerKey<(Protocol, UserName)>>,
}

/// One logged-in connection of a user on a protocol, counted until dropped (see
/// [`SessionContext::user_slot`]).
pub type UserSlot = KeySlot<(Protocol, UserName)>;

/// `user` holds `limits.max-connections-per-user` connections of the protocol already.
#[derive(Debug)]
pub struct TooManyForUser;

impl SessionContext {
    pub fn new(
        config: Arc<Config>,
        (plugins, services): (Arc<ActivePlugins>, Services),
        users: Arc<UserDirectory>,
        tls: Option<TlsAcceptor>,
    ) -> SessionContext {
        SessionContext {
            auth_budget: AuthBudget::new(
                config.limits.auth_failures_per_ip,
                Duration::from_secs(config.limits.auth_failure_window_secs),
            ),
            password_checks: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            waiting_for_login: Arc::new(PerIp::default()),
            logged_in: Arc::new(PerKey::default()),
            config,
            plugins,
            services,
            users,
            tls,
        }
    }

    /// The time a new IMAP or POP3 client at `ip` has to log in (`limits.login-timeout-secs`
    /// from now), or None when `limits.max-prelogin-connections-per-ip` of that address's
    /// connections are already waiting to.
    /// A listener's answer for a protocol with a login: the window, or too many waiting.
    pub fn prelogin_window(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Option<LoginWindow>, crate::net::limits::TooManyWaiting> {
        self.login_window(ip)
            .map(Some)
            .ok_or(crate::net::limits::TooManyWaiting)
    }

    pub fn login_window(&self, ip: std::net::IpAddr) -> Option<LoginWindow> {
        let limits = &self.config.limits;
        LoginWindow::open(
            &self.waiting_for_login,
            ip,
            limits.max_prelogin_connections_per_ip,
            Duration::from_secs(limits.login_timeout_secs),
        )
    }

    /// A slot for one more logged-in `protocol` connection of `user`, held by the session
    /// until it ends (or logs out), unless the user has `limits.max-connections-per-user` of
    /// them already: then the login is refused, and the connection stays as it was.
    pub fn user_slot(
        &self,
        protocol: Protocol,
        user: &UserName,
    ) -> Result<UserSlot, TooManyForUser> {
        let max = match self.config.limits.max_connections_per_user {
            0 => usize::MAX,
            max => max,
        };
        let slot = self.logged_in.take((protocol, user.clone()), max);
        if slot.is_none() {
            tracing::info!(user = %user, protocol = protocol.name(), "login refused: too many connections for this user");
        }
        slot.ok_or(TooManyForUser)
    }

    /// Checks a password off the async threads (argon2 takes milliseconds on purpose), at most
    /// one check per core at a time, so that a flood of logins queues instead of exhausting
    /// memory. The user's canonical name when it matches: the only name a session may derive
    /// a mailbox from.
    pub async fn verify_password(
        &self,
        protocol: Protocol,
        user: &str,
        password: String,
    ) -> Option<UserName> {
        let _permit = self.password_checks.clone().acquire_owned().await.ok()?;
        let (users, user) = (self.users.get(), user.to_string());
        let name = tokio::task::spawn_blocking(move || users.login(&user, &password))
            .await
            .unwrap_or(None);
        metrics::auth(protocol.name(), name.is_some());
        name
    }

    /// Whether a client at `ip` may try to log in now (its failure budget is not used up).
    pub fn login_allowed(&self, ip: IpAddr) -> bool {
        let allowed = self.auth_budget.allows(ip);
        if !allowed {
            tracing::info!(%ip, "login refused: failure budget of the address used up");
        }
        allowed
    }

    /// After a failed login (SMTP AUTH, POP3, IMAP): takes from the address's budget, waits
    /// longer with each failure of the session, and says whether the client has used up its
    /// attempts (the connection is then closed).
    pub async fn login_failed(&self, ip: IpAddr, user: &str, failures: u32) -> bool {
        tracing::info!(user, failures, "login failed");
        self.auth_budget.failed(ip);
        let limits = &self.config.limits;
        let delay = limits.auth_failure_delay_ms * u64::from(failures);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        failures >= limits.max_auth_failures
    }
}
