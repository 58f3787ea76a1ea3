//! [`Gateway::builder`]: a test gateway described setting by setting before it starts.

use super::{Gateway, BOUNDED_ADDRESS_SPACE};

/// A test gateway before it starts ([`Gateway::builder`]); each setting has a default, so a
/// test names only what it needs.
#[derive(Default)]
pub struct GatewayBuilder {
    domain: Option<String>,
    server: String,
    users_database: Option<(String, String)>,
    extra: String,
    bounded: bool,
}

impl GatewayBuilder {
    /// The local domain, and the test users' domain (default `example.test`).
    pub fn domain(mut self, domain: &str) -> GatewayBuilder {
        self.domain = Some(domain.to_string());
        self
    }

    /// More keys for the `[server]` table.
    pub fn server(mut self, keys: &str) -> GatewayBuilder {
        self.server = keys.to_string();
        self
    }

    /// Users from the database at `url` (`[local] source`), with `local` keys added to
    /// `[local]`; the test users are not added (the database has its own).
    pub fn users_database(mut self, url: &str, local: &str) -> GatewayBuilder {
        self.users_database = Some((url.to_string(), local.to_string()));
        self
    }

    /// Further config after the listeners: plugins, limits, routes...
    pub fn config(mut self, extra: &str) -> GatewayBuilder {
        self.extra = extra.to_string();
        self
    }

    /// The server runs under an address-space limit ([`BOUNDED_ADDRESS_SPACE`],
    /// `setrlimit(RLIMIT_AS)` before exec): an allocation that grows with a request fails and
    /// the process dies, which the test sees.
    pub fn bounded(mut self) -> GatewayBuilder {
        self.bounded = true;
        self
    }

    /// Writes the config, adds the test users and starts the server; returns once its ports
    /// are open.
    pub fn start(self) -> Gateway {
        let domain = self.domain.as_deref().unwrap_or("example.test");
        let local = match &self.users_database {
            Some((url, local)) => format!("source = \"{url}\"\n{local}"),
            None => String::new(),
        };
        let mut gateway = Gateway::configure(domain, &self.server, &local, &self.extra);
        if self.bounded {
            gateway.address_space = Some(BOUNDED_ADDRESS_SPACE);
        }
        gateway.add_test_users(domain, &local);
        gateway.launch();
        gateway
    }
}
