//! Config text for test gateways: the template every test gateway (and each node of `cargo
//! xtask cluster`, which includes the same file) starts from, and `[[plugin]]` entries for the
//! test fixtures.

use crate::root;

/// The gateway config with `{name}` placeholders: `hostname`, `server` (more `[server]` keys),
/// `metrics` (its port), `domain` (the one local domain), `local` (more `[local]` keys and
/// subtables), a port for each listener (`inbound`, `submission`, `smtps`, `pop3`, `pop3s`,
/// `imap`, `imaps`, `jmap`) and `extra` (any further tables).
pub const TEMPLATE: &str = include_str!("gateway.toml.template");

/// [`TEMPLATE`] with each `{name}` replaced by its value, in one pass: a value that itself
/// holds braces (an inline table in `extra`) is left as it is.
pub fn render(values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(TEMPLATE.len() + 1024);
    let mut rest = TEMPLATE;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            let (_, value) = values.iter().find(|(key, _)| *key == name)?;
            Some((value, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => panic!(
                "gateway template: no value for a placeholder at {:?}",
                &after[..after.len().min(20)]
            ),
        }
    }
    out.push_str(rest);
    out
}

/// A `[[plugin]]` entry for the probe fixture named `name`, declaring `stage`, with extra
/// `[plugin.config]` lines (`action.<stage> = ...` and the like).
pub fn probe_plugin(name: &str, stage: &str, settings: &str) -> String {
    let path = root().join("target/test-plugins/probe-plugin.wasm");
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\n[plugin.config]\nname = \"{name}\"\nstages = [\"{stage}\"]\n{settings}\n",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every placeholder is filled once: braces inside a value (an inline table) stay as they
    /// are, even when they spell another placeholder's name.
    #[test]
    fn the_template_is_filled_in_one_pass() {
        let names = [
            "hostname",
            "server",
            "metrics",
            "domain",
            "local",
            "inbound",
            "submission",
            "smtps",
            "pop3",
            "pop3s",
            "imap",
            "imaps",
            "jmap",
        ];
        let mut values: Vec<(&str, &str)> = names.iter().map(|n| (*n, "1")).collect();
        values.push(("extra", "[x]\nt = { a = \"{domain}\" }"));
        let text = render(&values);
        assert!(text.ends_with("[x]\nt = { a = \"{domain}\" }\n"), "{text}");
        assert!(text.contains("domains = [\"1\"]"), "{text}");
        assert_eq!(text.matches('{').count(), 2, "{text}");
    }
}
