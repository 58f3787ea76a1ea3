//! What every command starts from: the config (a file or the embedded defaults, with the
//! command line's data directory) and the compiled-plugin cache.

use std::path::PathBuf;

use mailgate::config::Config;
use mailgate::config::ConfigSource;

pub(crate) fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(ConfigSource {
        path: path.map(PathBuf::from),
        data_dir: None,
    }
    .load()?)
}

pub(crate) fn load_with_data_dir(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    Ok(ConfigSource {
        path: config,
        data_dir,
    }
    .load()?)
}

/// Compiled plugins are cached per user so the second run starts in milliseconds.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("MAILGATE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mailgate")))
}
