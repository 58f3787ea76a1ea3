//! Which way mail for a recipient domain goes: the first `[[route]]` whose domains match, else
//! MX delivery with opportunistic TLS. Local domains never get here.

use crate::config::{ClientTls, MtaStsSwitch, RouteConfig, RouteKind};
use crate::mail::Route as PluginRoute;

/// Where one group of recipients is delivered, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What plugins see at the deliver stage.
    pub route: PluginRoute,
    pub tls: ClientTls,
    pub tls_verify: bool,
    pub auth: Option<(String, String)>,
    /// MX delivery that follows the domain's MTA-STS policy.
    pub mta_sts: bool,
}

impl Target {
    /// Recipients with the same key go in one transaction, and share a concurrency limit.
    pub fn key(&self) -> String {
        match &self.route {
            PluginRoute::Relay(host) => format!("relay:{host}"),
            PluginRoute::Mx(domain) => format!("mx:{domain}"),
            PluginRoute::Local => "local".into(),
        }
    }

    /// A one-off target for a plugin's reroute: opportunistic TLS, no credentials.
    pub fn reroute(host: &str) -> Target {
        Target {
            route: PluginRoute::Relay(host.to_string()),
            tls: ClientTls::Opportunistic,
            tls_verify: false,
            auth: None,
            mta_sts: false,
        }
    }
}

/// The configured routes.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<RouteConfig>,
}

impl Router {
    pub fn new(routes: &[RouteConfig]) -> Router {
        Router {
            routes: routes.to_vec(),
        }
    }

    /// The target for a recipient address (by its domain).
    pub fn target(&self, recipient: &str) -> Target {
        let domain = recipient
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        let rule = self
            .routes
            .iter()
            .find(|r| r.domains.iter().any(|p| matches(p, &domain)));
        match rule {
            Some(rule) => {
                let route = match (rule.kind, &rule.host) {
                    (RouteKind::Relay, Some(host)) => PluginRoute::Relay(host.clone()),
                    (RouteKind::Local, _) => PluginRoute::Local,
                    _ => PluginRoute::Mx(domain),
                };
                Target {
                    mta_sts: matches!(route, PluginRoute::Mx(_))
                        && rule.mta_sts == MtaStsSwitch::On,
                    route,
                    tls: rule.tls,
                    tls_verify: rule.tls_verify,
                    auth: rule.auth_user.clone().zip(rule.auth_password.clone()),
                }
            }
            None => Target {
                route: PluginRoute::Mx(domain),
                tls: ClientTls::Opportunistic,
                tls_verify: false,
                auth: None,
                mta_sts: true,
            },
        }
    }
}

/// `*` matches everything, `*.example.com` its subdomains, anything else one domain exactly.
fn matches(pattern: &str, domain: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|rest| rest.ends_with('.')),
        None => pattern == domain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{is_host_port, split_host_port};

    fn route(domains: &[&str], kind: RouteKind, host: Option<&str>) -> RouteConfig {
        RouteConfig {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            kind,
            host: host.map(str::to_string),
            tls: ClientTls::None,
            tls_verify: true,
            auth_user: None,
            auth_password: None,
            mta_sts: MtaStsSwitch::On,
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let router = Router::new(&[
            route(&["partner.test"], RouteKind::Mx, None),
            route(&["*.corp.test"], RouteKind::Relay, Some("10.0.0.1:25")),
            route(&["*"], RouteKind::Relay, Some("smart:587")),
        ]);
        assert_eq!(
            router.target("a@Partner.Test").route,
            PluginRoute::Mx("partner.test".into())
        );
        assert_eq!(
            router.target("a@eu.corp.test").route,
            PluginRoute::Relay("10.0.0.1:25".into())
        );
        assert_eq!(
            router.target("a@corp.test").route,
            PluginRoute::Relay("smart:587".into())
        );
        assert_eq!(
            Router::default().target("x@y.test").route,
            PluginRoute::Mx("y.test".into())
        );
    }

    #[test]
    fn host_ports() {
        assert_eq!(split_host_port("a.b:25"), Some(("a.b".into(), 25)));
        assert_eq!(split_host_port("[::1]:2525"), Some(("::1".into(), 2525)));
        assert!(!is_host_port("a.b"));
        assert!(!is_host_port(":25"));
        assert!(!is_host_port("a:0"));
    }
}
