//! Checks that serde cannot express, run after parsing, and the line of each plugin key for
//! errors found later.

use super::{is_host_port, Config, Grant, PluginConfig, RouteKind};

/// Records where each `[[plugin]]` entry starts and on which line each key of its config table
/// is, so errors found later (against a plugin's declared settings) can name the line.
pub(super) fn locate_plugin_keys(text: &str, plugins: &mut [PluginConfig]) {
    let mut index: Option<usize> = None;
    let mut in_config = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            if line.starts_with("[[plugin]]") {
                index = Some(index.map_or(0, |i| i + 1));
                if let Some(plugin) = index.and_then(|i| plugins.get_mut(i)) {
                    plugin.line = number + 1;
                }
            }
            in_config = line.starts_with("[plugin.config");
            continue;
        }
        let Some(plugin) = index.and_then(|i| plugins.get_mut(i)) else {
            continue;
        };
        let inline = line.strip_prefix("config").map(str::trim_start);
        let keys: Vec<&str> = match inline.and_then(|rest| rest.strip_prefix('=')) {
            // `config = { a = 1, b = 2 }`: the keys of the inline table.
            Some(table) => table
                .trim()
                .trim_start_matches('{')
                .split(',')
                .filter_map(|item| item.split_once('=').map(|(k, _)| k))
                .collect(),
            None if in_config => line.split_once('=').map(|(k, _)| k).into_iter().collect(),
            None => Vec::new(),
        };
        for key in keys {
            let key = key.trim().trim_matches('"').to_string();
            plugin.config_lines.entry(key).or_insert(number + 1);
        }
    }
}

impl Config {
    /// The shared stores' addresses: a kv backend and a users source of a kind we speak.
    pub(super) fn check_stores(&self) -> Result<(), String> {
        let backend = &self.kv.backend;
        let redis = backend.starts_with("redis://") || backend.starts_with("redis+unix://");
        if backend != "local" && !redis {
            return Err(format!(
                "[kv] backend = {backend:?}: want \"local\" or a redis:// (redis+unix://) URL"
            ));
        }
        if let Some(source) = &self.local.source {
            if !(source.starts_with("postgres://") || source.starts_with("postgresql://")) {
                return Err(format!(
                    "[local] source = {source:?}: want a postgres:// URL"
                ));
            }
        }
        Ok(())
    }

    /// Plugin entry rules that serde cannot express.
    pub(super) fn check_plugins(&self) -> Result<(), String> {
        let ceiling = self.runtime.max_memory_mb;
        for plugin in &self.plugins {
            let at = format!("line {}: plugin {}", plugin.line, plugin.target());
            match (&plugin.milter, plugin.path.as_os_str().is_empty()) {
                (Some(_), false) => {
                    return Err(format!("{at}: set `path` or `milter`, not both"));
                }
                (None, true) => {
                    return Err(format!(
                        "{at}: needs `path` (a component) or `milter` (an address)"
                    ));
                }
                _ => {}
            }
            if plugin.memory_mb > ceiling || plugin.memory_mb == 0 {
                return Err(format!(
                    "{at}: memory-mb = {} is outside 1..={ceiling} (runtime.max-memory-mb)",
                    plugin.memory_mb
                ));
            }
            if let Some(ms @ (0 | 60_001..)) = plugin.timeout_ms {
                return Err(format!("{at}: timeout-ms = {ms} is outside 1..=60000"));
            }
            if plugin.instance_reuse == Some(0) {
                return Err(format!("{at}: instance-reuse must be at least 1"));
            }
            match (plugin.grant.contains(&Grant::Files), &plugin.files) {
                (true, None) => {
                    return Err(format!(
                        "{at}: grant \"files\" needs `files`, the directory to open"
                    ))
                }
                (false, Some(_)) => {
                    return Err(format!("{at}: `files` is set but \"files\" is not granted"))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Route rules that serde cannot express; `local` routes make their domains local.
    pub(super) fn check_routes(&mut self) -> Result<(), String> {
        for (index, route) in self.routes.iter().enumerate() {
            let at = format!("route #{} ({})", index + 1, route.domains.join(", "));
            if route.domains.is_empty() {
                return Err(format!("{at}: `domains` is empty"));
            }
            match (route.kind, &route.host) {
                (RouteKind::Relay, None) => {
                    return Err(format!("{at}: type \"relay\" needs `host`"))
                }
                (RouteKind::Relay, Some(host)) if !is_host_port(host) => {
                    return Err(format!("{at}: host {host:?} is not host:port"))
                }
                (RouteKind::Local | RouteKind::Mx, Some(_)) => {
                    return Err(format!("{at}: `host` is only for type \"relay\""))
                }
                _ => {}
            }
            if route.auth_user.is_some() != route.auth_password.is_some() {
                return Err(format!("{at}: auth-user and auth-password go together"));
            }
            if route.kind == RouteKind::Local && route.domains.iter().any(|d| d.contains('*')) {
                return Err(format!("{at}: a local route needs exact domains"));
            }
        }
        for (domain, host) in &self.relay.mta_sts.policy_host_override {
            if !is_host_port(host) {
                return Err(format!(
                    "relay.mta-sts policy-host-override for {domain}: {host:?} is not host:port"
                ));
            }
        }
        if let Some(path) = &self.relay.extra_roots {
            if !self.resolve(path).is_file() {
                return Err(format!(
                    "relay extra-roots: {} is not a file",
                    path.display()
                ));
            }
        }
        let local: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.kind == RouteKind::Local)
            .flat_map(|r| r.domains.clone())
            .collect();
        for domain in local {
            if !self
                .local
                .domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&domain))
            {
                self.local.domains.push(domain);
            }
        }
        Ok(())
    }
}
