//! The embedded defaults: what `mailgate` runs with when no config file is given.

use std::path::{Path, PathBuf};

/// The default config: the bundled plugins with safe settings for a local test gateway.
pub const DEFAULT_CONFIG: &str = r#"
# Embedded defaults. Plugin paths are relative to the bundled plugin directory.
[[plugin]]
path = "recipient-policy.wasm"
[plugin.config]
domains = ["localhost"]
max-recipients = 100

[[plugin]]
path = "mime-guard.wasm"
[plugin.config]
action = "strip"
extensions = ["exe", "scr", "js", "vbs", "bat", "cmd", "com", "pif", "jar", "msi"]

[[plugin]]
path = "header-rewrite.wasm"
[plugin.config]
trace-header = "X-Mailgate"
"#;

/// Where the bundled plugins are: `$MAILGATE_PLUGIN_DIR`, or `plugins/` beside the directory
/// of the executable (`target/plugins` for `target/release/mailgate`, as the build puts them).
pub fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MAILGATE_PLUGIN_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .and_then(Path::parent)
                .map(|p| p.join("plugins"))
        })
        .unwrap_or_else(|| PathBuf::from("plugins"))
}
