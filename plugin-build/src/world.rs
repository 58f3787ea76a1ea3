//! The world a plugin is built against. Contract 0.2 makes every stage an optional export, so
//! a plugin exports exactly the stages its sources implement: this module finds them by the
//! names each language's bindings require, and writes the contract plus a world exporting
//! those stages for the language's tool.

use std::path::{Path, PathBuf};

use crate::{Error, Language, Tools};

/// A stage: its WIT interface, and the name a plugin defines for it in each language.
struct StageNames {
    interface: &'static str,
    python_class: &'static str,
    js_export: &'static str,
    c_function: &'static str,
}

const STAGES: [StageNames; 7] = [
    stage("connect", "Connect", "connect", "connect"),
    stage("helo", "Helo", "helo", "helo"),
    stage("mail-from", "MailFrom", "mailFrom", "mail_from"),
    stage("rcpt-to", "RcptTo", "rcptTo", "rcpt_to"),
    stage("data", "Data", "data", "data"),
    stage("deliver", "Deliver", "deliver", "deliver"),
    stage("retrieve", "Retrieve", "retrieve", "retrieve"),
];

const fn stage(
    interface: &'static str,
    python_class: &'static str,
    js_export: &'static str,
    c_function: &'static str,
) -> StageNames {
    StageNames {
        interface,
        python_class,
        js_export,
        c_function,
    }
}

/// True when `name` is the name a JavaScript module exports a stage under (`rcptTo`).
pub fn is_js_stage(name: &str) -> bool {
    STAGES.iter().any(|s| s.js_export == name)
}

/// The world name the build uses, in the contract and in the generated file.
pub const WORLD: &str = "plugin";

/// True when the contract in `contract_dir` makes every stage an optional export (0.2 on).
pub fn has_optional_stages(contract_dir: &Path) -> Result<bool, Error> {
    let contract_file = contract_dir.join("plugin.wit");
    let contract =
        std::fs::read_to_string(&contract_file).map_err(|e| Error::io(&contract_file, e))?;
    Ok(contract.contains("world plugin-base"))
}

/// The contract to build against (`contract_dir`) made ready for the plugin in `dir`: for a
/// contract with optional stage exports, a copy in `work` with a world exporting the stages
/// the sources implement; an older contract (one `plugin` world) is used as it is.
pub fn prepare(
    tools: &Tools,
    contract_dir: &Path,
    language: Language,
    dir: &Path,
    work: &Path,
) -> Result<PathBuf, Error> {
    if !has_optional_stages(contract_dir)? {
        return Ok(contract_dir.to_path_buf());
    }
    let contract_file = contract_dir.join("plugin.wit");
    let contract =
        std::fs::read_to_string(&contract_file).map_err(|e| Error::io(&contract_file, e))?;
    let stages = implemented_stages(tools, language, dir)?;
    if stages.is_empty() {
        return Err(Error::NotAPlugin(format!(
            "{} implements no stage: {}",
            dir.display(),
            expected_names(language)
        )));
    }
    let mut world = format!("\n/// Written by the build: the stages this plugin implements.\nworld {WORLD} {{\n    include plugin-base;\n");
    for interface in &stages {
        world.push_str(&format!("    export {interface};\n"));
    }
    world.push_str("}\n");
    std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
    let file = work.join("plugin.wit");
    std::fs::write(&file, contract + &world).map_err(|e| Error::io(&file, e))?;
    Ok(work.to_path_buf())
}

/// The SDK's stage traits implemented in a Rust plugin's sources but not listed in its
/// `export_plugin!` (so never exported): found by their names, for a warning at build time.
pub fn rust_stages_not_exported(dir: &Path) -> Vec<&'static str> {
    const TRAITS: [&str; 7] = [
        "Connect", "Helo", "MailFrom", "RcptTo", "Data", "Deliver", "Retrieve",
    ];
    let mut text = String::new();
    let mut pending = vec![dir.join("src")];
    while let Some(path) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten().map(|e| e.path()) {
            if entry.is_dir() {
                pending.push(entry);
            } else if entry.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&entry).unwrap_or_default());
            }
        }
    }
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '!'))
        .filter(|w| !w.is_empty())
        .collect();
    let implemented = |name: &str| {
        words.windows(2).any(|w| w[0] == "impl" && w[1] == name)
            || words
                .windows(2)
                .any(|w| w[0] == "impl" && w[1] == format!("mailgate_sdk::{name}"))
    };
    let exported_list = text
        .split("export_plugin!(")
        .skip(1)
        .map(|rest| rest.split(')').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let listed = |name: &str| {
        exported_list
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w == name)
    };
    TRAITS
        .into_iter()
        .filter(|t| implemented(t) && !listed(t))
        .collect()
}

/// What a plugin in `language` defines for a stage, for the error when it defines none.
fn expected_names(language: Language) -> String {
    let names: Vec<String> = STAGES
        .iter()
        .map(|s| match language {
            Language::Python => format!("class {}", s.python_class),
            Language::JavaScript => format!("export {}", s.js_export),
            _ => format!("exports_mailgate_plugin_{}_handle", s.c_function),
        })
        .collect();
    format!("define one of {}", names.join(", "))
}

/// The WIT interfaces of the stages the sources in `dir` implement.
pub fn implemented_stages(
    tools: &Tools,
    language: Language,
    dir: &Path,
) -> Result<Vec<&'static str>, Error> {
    let sources: Vec<PathBuf> = match language {
        Language::Python => vec![dir.join("app.py")],
        Language::JavaScript => {
            // The module's exports, not its text: any form of `export` counts.
            let names = tools.js_export_names(&dir.join("app.js"))?;
            return Ok(STAGES
                .iter()
                .filter(|s| names.iter().any(|n| n == s.js_export))
                .map(|s| s.interface)
                .collect());
        }
        Language::C => c_sources(dir)?,
        Language::Rust => return Ok(Vec::new()),
    };
    let mut text = String::new();
    for source in &sources {
        text.push_str(&std::fs::read_to_string(source).map_err(|e| Error::io(source, e))?);
        text.push('\n');
    }
    Ok(STAGES
        .iter()
        .filter(|s| defines(language, &text, s))
        .map(|s| s.interface)
        .collect())
}

fn defines(language: Language, text: &str, stage: &StageNames) -> bool {
    text.lines().any(|line| match language {
        // componentize-py looks the class up by the interface's name.
        Language::Python => line
            .strip_prefix("class ")
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix(stage.python_class))
            .is_some_and(|rest| rest.starts_with(['(', ':', ' '])),
        _ => {
            let function = format!("exports_mailgate_plugin_{}_handle(", stage.c_function);
            // A definition, not a call: the name starts a declaration line.
            line.starts_with("void ") && line.contains(&function)
        }
    })
}

/// The `*.c` files directly in `dir`, sorted (the generated bindings live elsewhere).
pub(crate) fn c_sources(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_stages_implemented_but_not_exported_are_found() {
        let dir = std::env::temp_dir().join(format!("mailgate-rust-stages-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(
            dir.join("src/lib.rs"),
            "impl Plugin for P {}\nimpl RcptTo for P {}\nimpl Data for P {}\n\
             export_plugin!(P: RcptTo);\n",
        )
        .unwrap();
        assert_eq!(rust_stages_not_exported(&dir), ["Data"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stages_are_found_by_their_language_names() {
        let found = |language, text: &str| {
            STAGES
                .iter()
                .filter(|s| defines(language, text, s))
                .map(|s| s.interface)
                .collect::<Vec<_>>()
        };
        let py = "class Plugin(exports.Plugin):\n    pass\nclass RcptTo(exports.RcptTo):\nclass Database:\n";
        assert_eq!(found(Language::Python, py), ["rcpt-to"]);
        let c = "void exports_mailgate_plugin_mail_from_handle(mg_session_t *s,\n  x);\n  exports_mailgate_plugin_data_handle(a);\n";
        assert_eq!(found(Language::C, c), ["mail-from"]);
    }
}
