//! The code samples of docs/plugins.md are built and run, so the guide cannot drift from the
//! code. Every fenced block carries a marker comment on the line before it saying what it is:
//! - `<!-- sample: plugin NAME -->`: a whole plugin (rust, python, js, c), written over the
//!   scaffold of its language, built with `mailgate plugin build`, and run against the case
//!   files in tests/docs/NAME/ with `mailgate test`;
//! - `<!-- sample: rust-data NAME -->`: statements of a Rust data stage, built and run the same
//!   way inside one;
//! - `<!-- sample: shell ... -->`: the commands, run (with `--lang rust`);
//! - `<!-- sample: config ... -->`: a `[[plugin]]` table, the whole config given to
//!   `mailgate config check`, with the plugin the shell sample built;
//! - `<!-- sample: output -->`: what a command prints, not run.
//!
//! A block without a marker fails the test.

use std::path::Path;

use mailgate_e2e::{home_with_tools, mailgate_as_user, root};

struct Sample {
    /// The marker's words after `sample:`.
    kind: Vec<String>,
    language: String,
    code: String,
    line: usize,
}

/// The fenced blocks of `text` with their markers; an unmarked block is an error.
fn samples(text: &str) -> Result<Vec<Sample>, String> {
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut previous = "";
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(language) = trimmed.strip_prefix("```") else {
            if !trimmed.is_empty() {
                previous = trimmed;
            }
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut code = String::new();
        for (_, inner) in lines.by_ref() {
            if inner.trim_start().starts_with("```") {
                break;
            }
            code.push_str(inner.get(indent..).unwrap_or(inner.trim_start()));
            code.push('\n');
        }
        let kind = previous
            .strip_prefix("<!-- sample:")
            .and_then(|rest| rest.strip_suffix("-->"))
            .ok_or_else(|| {
                format!(
                    "docs/plugins.md:{}: a ```{language} block without a `<!-- sample: ... -->` marker",
                    index + 1
                )
            })?;
        found.push(Sample {
            kind: kind.split_whitespace().map(str::to_owned).collect(),
            language: language.trim().to_owned(),
            code,
            line: index + 1,
        });
        previous = "";
    }
    Ok(found)
}

/// The scaffold language and the file a sample of `language` replaces.
fn scaffold_file(language: &str) -> (&'static str, &'static str) {
    match language {
        "rust" => ("rust", "src/lib.rs"),
        "python" => ("python", "app.py"),
        "js" => ("js", "app.js"),
        "c" => ("c", "plugin.c"),
        other => panic!("no plugin language {other:?}"),
    }
}

/// A Rust data stage around the statements of a fragment.
fn rust_data_plugin(name: &str, statements: &str) -> String {
    format!(
        "use mailgate_sdk::prelude::*;\n\nstruct Fragment;\n\nimpl Plugin for Fragment {{\n    \
         const NAME: &'static str = \"{name}\";\n}}\n\nimpl Data for Fragment {{\n    \
         fn data(_: &Session, _: &Envelope, _: &Message) -> Outcome {{\n{statements}\n        \
         Outcome::proceed()\n    }}\n}}\n\nexport_plugin!(Fragment: Data);\n"
    )
}

/// Builds `code` as the plugin NAME over its language's scaffold in `work`, then runs the
/// case files of tests/docs/NAME/ against it; returns what `mailgate test` printed.
fn build_and_test(work: &Path, home: &Path, name: &str, language: &str, code: &str) -> String {
    let (lang, file) = scaffold_file(language);
    mailgate_as_user(work, home, &["plugin", "new", "--lang", lang, name]);
    let dir = work.join(name);
    std::fs::write(dir.join(file), code).expect("write the sample");
    let cases = dir.join("cases");
    std::fs::remove_dir_all(&cases).expect("the scaffold's cases");
    std::fs::create_dir(&cases).expect("mkdir");
    let ours = root().join("tests/docs").join(name);
    for entry in std::fs::read_dir(&ours).unwrap_or_else(|e| panic!("{}: {e}", ours.display())) {
        let path = entry.expect("entry").path();
        let to = cases.join(path.file_name().expect("name"));
        std::fs::copy(&path, to).expect("copy the cases");
    }
    mailgate_as_user(work, home, &["plugin", "build", name]);
    let (tested, _) = mailgate_as_user(work, home, &["test", &format!("{name}/cases")]);
    tested
}

#[test]
fn every_sample_in_the_plugin_guide_builds_and_runs() {
    let text = std::fs::read_to_string(root().join("docs/plugins.md")).expect("docs");
    let samples = samples(&text).unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().expect("tempdir");
    let home = home_with_tools(work.path(), true);
    let mut ran = Vec::new();
    // The shell sample first: the config sample loads what it built.
    let order = |s: &Sample| match s.kind.first().map(String::as_str) {
        Some("shell") => 0,
        Some("config") => 2,
        _ => 1,
    };
    let mut ordered: Vec<&Sample> = samples.iter().collect();
    ordered.sort_by_key(|s| order(s));
    for sample in ordered {
        let at = format!("docs/plugins.md:{}", sample.line);
        let word = |i: usize| sample.kind.get(i).map(String::as_str).unwrap_or("");
        match word(0) {
            "plugin" | "rust-data" => {
                let name = word(1);
                let code = if word(0) == "rust-data" {
                    assert_eq!(sample.language, "rust", "{at}");
                    rust_data_plugin(name, &sample.code)
                } else {
                    sample.code.clone()
                };
                let tested = build_and_test(work.path(), &home, name, &sample.language, &code);
                let passed = tested.lines().last().unwrap_or("");
                assert!(
                    passed.ends_with(" passed, 0 failed") && !passed.starts_with("0 passed"),
                    "{at} ({name}): {tested}"
                );
            }
            "shell" => {
                for command in sample.code.lines() {
                    let command = command.split('#').next().unwrap_or("").trim();
                    let args: Vec<&str> = command
                        .split_whitespace()
                        .map(|w| if w == "rust|python|js|c" { "rust" } else { w })
                        .collect();
                    let Some(("mailgate", args)) = args.split_first().map(|(a, b)| (*a, b)) else {
                        panic!("{at}: not a mailgate command: {command}");
                    };
                    let (out, _) = mailgate_as_user(work.path(), &home, args);
                    if args.first() == Some(&"test") {
                        // The comment says what the command prints.
                        let promised = sample
                            .code
                            .lines()
                            .find(|l| l.contains("mailgate test"))
                            .and_then(|l| l.split('#').nth(1))
                            .map(str::trim)
                            .unwrap_or("");
                        assert!(out.trim_end().ends_with(promised), "{at}: {out}");
                    }
                }
            }
            "config" => {
                let config = work.path().join("gateway.toml");
                std::fs::write(&config, &sample.code).expect("config");
                let (out, errors) = mailgate_as_user(
                    work.path(),
                    &home,
                    &["config", "check", "--config", "gateway.toml"],
                );
                let said = format!("{out}{errors}");
                assert!(
                    !said
                        .lines()
                        .any(|l| l.contains("warning") && l.contains("plugin")),
                    "{at}: {said}"
                );
            }
            "output" => {}
            other => panic!("{at}: unknown sample kind {other:?}"),
        }
        ran.push(format!("{} {}", word(0), word(1)));
    }
    // Every kind the guide holds was met (a marker typo would skip nothing silently).
    for kind in ["plugin", "rust-data", "shell", "config", "output"] {
        assert!(
            ran.iter().any(|r| r.starts_with(kind)),
            "no {kind} sample: {ran:?}"
        );
    }
}

#[test]
fn an_unmarked_sample_is_refused() {
    let text = "Text.\n\n```python\nprint(1)\n```\n";
    let error = samples(text).err().expect("refused");
    assert!(error.contains("docs/plugins.md:3"), "{error}");
    let marked = "<!-- sample: output -->\n```\nout\n```\n";
    assert_eq!(samples(marked).expect("marked").len(), 1);
}
