//! `cargo xtask layers`: fails when a module of host/src names a module it must not depend on
//! (the rules are in `host/layers.txt`), printing file:line of each such `crate::` path.

use std::fs;
use std::path::{Path, PathBuf};

/// One line of `host/layers.txt`: no module under any of `from` may name any of `to`.
#[derive(Debug, PartialEq)]
struct Rule {
    from: Vec<String>,
    /// Empty: any module of ours but the one the file is in (`*`).
    to: Vec<String>,
    why: String,
    line: usize,
}

/// A dependency a rule forbids.
#[derive(Debug, PartialEq)]
struct Violation {
    file: PathBuf,
    line: usize,
    path: String,
    rule: usize,
}

pub fn check(root: &Path) -> Result<(), String> {
    let src = root.join("host/src");
    let table = root.join("host/layers.txt");
    let text = fs::read_to_string(&table).map_err(|e| format!("{}: {e}", table.display()))?;
    let rules = parse_rules(&text).map_err(|e| format!("{}: {e}", table.display()))?;
    for rule in &rules {
        for name in rule.from.iter().chain(&rule.to) {
            if module_files(&src, name).is_empty() {
                return Err(format!(
                    "{}:{}: no module `{name}` under host/src (renamed? update the rule)",
                    table.display(),
                    rule.line
                ));
            }
        }
    }
    let mut found = Vec::new();
    for rule in &rules {
        for from in &rule.from {
            for file in module_files(&src, from) {
                let text =
                    fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                for (line, path) in crate_paths(&text) {
                    if forbidden(rule, from, &path) {
                        found.push(Violation {
                            file: file.clone(),
                            line,
                            path,
                            rule: rule.line,
                        });
                    }
                }
            }
        }
    }
    for v in &found {
        let rule = rules
            .iter()
            .find(|r| r.line == v.rule)
            .map_or("", |r| &r.why);
        let file = v.file.strip_prefix(root).unwrap_or(&v.file);
        println!(
            "{}:{}: crate::{} ({}:{}: {rule})",
            file.display(),
            v.line,
            v.path,
            table.strip_prefix(root).unwrap_or(&table).display(),
            v.rule
        );
    }
    if found.is_empty() {
        println!("layers: {} rules hold", rules.len());
        Ok(())
    } else {
        Err(format!("{} forbidden dependencies", found.len()))
    }
}

fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (edge, why) = line.split_once(" : ").unwrap_or((line, ""));
        let Some((from, to)) = edge.split_once("->") else {
            return Err(format!("line {}: want `FROM ... -> TO ... : why`", n + 1));
        };
        let names = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let (from, mut to) = (names(from), names(to));
        if from.is_empty() || to.is_empty() {
            return Err(format!(
                "line {}: a rule needs modules on both sides",
                n + 1
            ));
        }
        if to == ["*"] {
            to.clear();
        }
        rules.push(Rule {
            from,
            to,
            why: why.trim().to_string(),
            line: n + 1,
        });
    }
    Ok(rules)
}

/// Whether `path` (after `crate::`), named in module `from`, breaks `rule`.
fn forbidden(rule: &Rule, from: &str, path: &str) -> bool {
    if rule.to.is_empty() {
        return !within(path, from);
    }
    rule.to.iter().any(|to| within(path, to))
}

/// Whether module path `path` is `module` or inside it (`relay::wire` is in `relay`, `relays`
/// is not).
fn within(path: &str, module: &str) -> bool {
    path == module
        || path
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with("::"))
}

/// The source files of module `name` (`a::b`: `a/b.rs` and everything under `a/b/`).
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let base = name
        .split("::")
        .fold(src.to_path_buf(), |p, part| p.join(part));
    let mut files = Vec::new();
    let file = base.with_extension("rs");
    if file.is_file() {
        files.push(file);
    }
    collect_rs(&base, &mut files);
    files.sort();
    files
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Every `crate::` path of a Rust source with its line, comments left out; a group
/// (`crate::{a, b::{c, d}}`) gives one path per member.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let code = without_comments(text);
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = code[at..].find("crate::") {
        let start = at + found;
        at = start + "crate::".len();
        // `mycrate::x` or `pub(crate)` are not paths of ours.
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        let (paths, _) = tree(&code[at..]);
        out.extend(paths.into_iter().map(|p| (line, p)));
    }
    out
}

/// The paths a use-tree starting at `s` names, and how many bytes it took.
fn tree(s: &str) -> (Vec<String>, usize) {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut prefix = String::new();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) == Some(&b'{') {
            let mut paths = Vec::new();
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return (join(&prefix, paths), i + 1);
                }
                let (inner, used) = tree(&s[i..]);
                paths.extend(inner);
                i += used.max(1);
                // Past ` as alias` to the next member.
                while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'}' {
                    i += 1;
                }
            }
        }
        let end = s[i..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(s.len(), |n| i + n);
        let segment = &s[i..end];
        if !segment.is_empty() {
            if !prefix.is_empty() {
                prefix.push_str("::");
            }
            prefix.push_str(segment);
        }
        i = end;
        if s[i..].starts_with("::") {
            i += 2;
            continue;
        }
        // ` as name`, `;`, `(`, `,`: the path ends here.
        return (
            if prefix.is_empty() {
                vec![]
            } else {
                vec![prefix]
            },
            i,
        );
    }
}

fn join(prefix: &str, paths: Vec<String>) -> Vec<String> {
    paths
        .into_iter()
        .map(|p| match (prefix.is_empty(), p.as_str()) {
            (true, _) => p,
            (false, "self") => prefix.to_string(),
            (false, _) => format!("{prefix}::{p}"),
        })
        .collect()
}

/// `text` with `//` and `/* */` comments blanked (line breaks kept, so lines still count),
/// string literals kept as they are.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let (mut in_string, mut block) = (false, 0u32);
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        if block > 0 {
            match (c, next) {
                ('*', Some('/')) => {
                    chars.next();
                    block -= 1;
                }
                ('/', Some('*')) => {
                    chars.next();
                    block += 1;
                }
                ('\n', _) => out.push('\n'),
                _ => {}
            }
            continue;
        }
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, next) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                block = 1;
            }
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_found_in_groups_and_not_in_comments() {
        let source = "//! see `crate::admin`\n\
            use crate::{config::Config as C, relay::{wire, dsn::{self}}};\n\
            /* crate::smtp */ let x = crate::smtp::reply::line(1);\n\
            pub(crate) fn f() {}\n\
            let s = \"// not a comment\"; crate::queue::spool::new_queue_id();\n";
        let paths = crate_paths(source);
        assert_eq!(
            paths,
            vec![
                (2, "config::Config".to_string()),
                (2, "relay::wire".to_string()),
                (2, "relay::dsn".to_string()),
                (3, "smtp::reply::line".to_string()),
                (5, "queue::spool::new_queue_id".to_string()),
            ]
        );
    }

    #[test]
    fn rules_match_whole_module_names() {
        let rules = parse_rules("# c\nimap pop3 -> relay : why\nconfig -> * : none\n").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].from, ["imap", "pop3"]);
        assert!(forbidden(&rules[0], "pop3", "relay::wire::data_payload"));
        assert!(!forbidden(&rules[0], "pop3", "relays::x"));
        assert!(!forbidden(&rules[0], "pop3", "message::lines"));
        assert!(forbidden(&rules[1], "config", "secret::read"));
        assert!(!forbidden(&rules[1], "config", "config::file"));
        assert!(parse_rules("imap relay\n").is_err());
    }

    #[test]
    fn the_table_of_this_tree_names_modules_that_exist() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = fs::read_to_string(root.join("host/layers.txt")).unwrap();
        for rule in parse_rules(&text).unwrap() {
            for name in rule.from.iter().chain(&rule.to) {
                assert!(
                    !module_files(&root.join("host/src"), name).is_empty(),
                    "{name}"
                );
            }
        }
    }
}
