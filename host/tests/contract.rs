//! The WIT contracts themselves: the current one parses as 0.2.1 with one optional export per
//! stage and keeps everything 0.2.0 had, and the 0.1.0 file the gateway keeps running is
//! exactly the one plugins were built against.

use sha2::{Digest, Sha256};
use wit_parser::{Resolve, WorldItem};

fn wit_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit")
}

fn interface<'a>(resolve: &'a Resolve, name: &str) -> &'a wit_parser::Interface {
    resolve
        .interfaces
        .iter()
        .find(|(_, i)| i.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("interface {name} missing"))
        .1
}

#[test]
fn the_current_contract_is_0_2_1_with_one_export_per_stage() {
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(wit_dir()).expect("wit/ parses");
    assert_eq!(
        resolve.packages[package].name.to_string(),
        "mailgate:plugin@0.2.1"
    );
    let world = resolve
        .select_world(&[package], Some("gateway"))
        .expect("world gateway");
    let exported: Vec<String> = resolve.worlds[world]
        .exports
        .values()
        .filter_map(|item| match item {
            WorldItem::Interface { id, .. } => resolve.interfaces[*id].name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(
        exported,
        [
            "connect",
            "helo",
            "mail-from",
            "rcpt-to",
            "data",
            "deliver",
            "retrieve",
            "info"
        ]
    );
    for stage in &exported[..7] {
        let functions: Vec<&String> = interface(&resolve, stage).functions.keys().collect();
        assert_eq!(functions, ["handle"], "{stage}");
    }
    let base = resolve
        .select_world(&[package], Some("plugin-base"))
        .expect("world plugin-base");
    assert_eq!(
        resolve.worlds[base].exports.len(),
        1,
        "plugin-base exports only info"
    );
    let host = interface(&resolve, "host");
    for import in [
        "log",
        "config-get",
        "kv-get",
        "kv-incr",
        "dns-lookup",
        "file-read",
    ] {
        assert!(host.functions.contains_key(import), "host.{import} missing");
    }
    let edits = interface(&resolve, "edits");
    for edit in ["add-header", "replace-part", "reroute", "defer"] {
        assert!(edits.functions.contains_key(edit), "edits.{edit} missing");
    }
    let auth = interface(&resolve, "auth");
    let functions: Vec<&String> = auth.functions.keys().collect();
    assert_eq!(functions, ["spf", "dkim", "dmarc", "arc"]);
    let imported: Vec<String> = resolve.worlds[base]
        .imports
        .values()
        .filter_map(|item| match item {
            WorldItem::Interface { id, .. } => resolve.interfaces[*id].name.clone(),
            _ => None,
        })
        .collect();
    assert!(imported.contains(&"auth".to_string()), "{imported:?}");
}

/// 0.2.1 only adds: every interface, function (with its parameters) and type of 0.2.0 (the
/// file as released, kept in tests/fixtures/contract-0.2.0) is still there, the same.
#[test]
fn the_0_2_1_contract_keeps_everything_0_2_0_had() {
    let mut old = Resolve::default();
    old.push_file(wit_dir().join("../tests/fixtures/contract-0.2.0/plugin.wit"))
        .expect("0.2.0 parses");
    let mut new = Resolve::default();
    new.push_dir(wit_dir()).expect("wit/ parses");
    for (_, was) in old.interfaces.iter() {
        let name = was.name.as_deref().expect("named interface");
        let now = interface(&new, name);
        for (function, before) in &was.functions {
            let after = now
                .functions
                .get(function)
                .unwrap_or_else(|| panic!("{name}.{function} removed"));
            let params = |f: &wit_parser::Function| -> Vec<String> {
                f.params.iter().map(|p| p.name.clone()).collect()
            };
            assert_eq!(params(before), params(after), "{name}.{function}");
            assert_eq!(
                before.result.is_some(),
                after.result.is_some(),
                "{name}.{function}"
            );
        }
        for type_name in was.types.keys() {
            assert!(
                now.types.contains_key(type_name),
                "{name}.{type_name} removed"
            );
        }
    }
}

/// Plugins built against 0.1.0 link against this file's interfaces: it must never change.
#[test]
fn the_0_1_0_contract_is_frozen() {
    let bytes = std::fs::read(wit_dir().join("v0.1/plugin.wit")).expect("wit/v0.1/plugin.wit");
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        digest,
        "abf8c6c9c15169be9268931b73c109676916a9ac7846aa694ee465363baa7bd2"
    );
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(wit_dir().join("v0.1")).expect("parses");
    assert_eq!(
        resolve.packages[package].name.to_string(),
        "mailgate:plugin@0.1.0"
    );
}
