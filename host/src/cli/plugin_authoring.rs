//! `mailgate plugin new` and `mailgate plugin build`: from nothing to a tested plugin in Rust,
//! Python, JavaScript or C.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use mailgate_plugin_build::scaffold::{default_output, default_sdk, Scaffold};
use mailgate_plugin_build::{Build, Language, Tools, CONTRACT};

#[derive(Subcommand)]
pub enum PluginAction {
    /// Start a plugin from a template that builds and passes its harness cases as it is.
    New {
        /// rust, python, js or c.
        #[arg(long, value_parser = parse_language)]
        lang: Language,
        /// The plugin's name: lower-case letters, digits and dashes.
        name: String,
        /// Where to write it (must not exist or be empty); default: ./NAME.
        dir: Option<PathBuf>,
        /// Rust: the mailgate-sdk crate directory; default: the one of the sources this
        /// program was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin in DIR (default: .) into a component, installing its language's tool
    /// on first use, once per user: into $MAILGATE_TOOLS, else $XDG_CACHE_HOME/mailgate/tools,
    /// else ~/.cache/mailgate/tools.
    Build {
        dir: Option<PathBuf>,
        /// The component to write; default: DIR/target/NAME.wasm (NAME: DIR's name).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn parse_language(name: &str) -> Result<Language, String> {
    Language::parse(name).ok_or_else(|| format!("{name:?}: expected rust, python, js or c"))
}

pub fn run(action: PluginAction) -> anyhow::Result<()> {
    match action {
        PluginAction::New {
            lang,
            name,
            dir,
            sdk,
        } => new(lang, &name, dir, sdk),
        PluginAction::Build { dir, output } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            let out = output.unwrap_or_else(|| default_output(&dir));
            build(&dir, &out)
        }
    }
}

fn new(
    lang: Language,
    name: &str,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let sdk = sdk.or_else(default_sdk);
    let files = Scaffold {
        language: lang,
        name,
        dir: &dir,
        sdk: sdk.as_deref(),
    }
    .create()?;
    println!(
        "created the {} plugin {name} in {}:",
        lang.as_str(),
        dir.display()
    );
    for file in files {
        println!("  {}", file.display());
    }
    println!(
        "next: mailgate plugin build {0} && mailgate test {0}/cases",
        dir.display()
    );
    Ok(())
}

fn build(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let language = Language::detect(dir)?;
    let tools = Tools::new(tools_dir(dir), "mailgate");
    let wit = contract_dir(dir)?;
    Build {
        tools: &tools,
        wit: &wit,
        dir,
        out,
        rust_target_dir: None,
    }
    .run(language)
    .with_context(|| {
        format!(
            "building the {} plugin in {}",
            language.as_str(),
            dir.display()
        )
    })?;
    println!("built {}", out.display());
    Ok(())
}

/// Where the language tools live: shared by every plugin of the user, so a second plugin in a
/// language builds in seconds. `$MAILGATE_TOOLS`, else the user's cache directory, else (no
/// home at all) the plugin's own `target/tools`.
fn tools_dir(plugin: &Path) -> PathBuf {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("MAILGATE_TOOLS")
        .or_else(|| env("XDG_CACHE_HOME").map(|cache| cache.join("mailgate/tools")))
        .or_else(|| env("HOME").map(|home| home.join(".cache/mailgate/tools")))
        .unwrap_or_else(|| plugin.join("target/tools"))
}

/// The plugin's own `wit/`, or the contract this gateway speaks written out for the build.
fn contract_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let own = dir.join("wit");
    if own.join("plugin.wit").is_file() {
        return Ok(own);
    }
    let written = dir.join("target/wit");
    std::fs::create_dir_all(&written)
        .with_context(|| format!("cannot create {}", written.display()))?;
    std::fs::write(written.join("plugin.wit"), CONTRACT)
        .with_context(|| format!("cannot write {}", written.display()))?;
    Ok(written)
}
