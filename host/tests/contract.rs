//! The WIT contract itself: it parses, is the version plugins build against, and its world
//! exports `describe` plus one function per stage.

use wit_parser::{Resolve, WorldItem};

#[test]
fn wit_parses_as_mailgate_plugin_0_1_0() {
    let mut resolve = Resolve::default();
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let (package, _) = resolve.push_dir(&wit).expect("wit/ parses");
    let name = &resolve.packages[package].name;
    assert_eq!(name.to_string(), "mailgate:plugin@0.1.0");

    let world = resolve
        .select_world(&[package], Some("plugin"))
        .expect("world plugin");
    let world = &resolve.worlds[world];
    let exported: Vec<String> = world
        .exports
        .values()
        .filter_map(|item| match item {
            WorldItem::Interface { id, .. } => resolve.interfaces[*id].name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(exported, vec!["handler".to_string()]);

    let handler = resolve
        .interfaces
        .iter()
        .find(|(_, i)| i.name.as_deref() == Some("handler"))
        .expect("handler")
        .1;
    let mut functions: Vec<&str> = handler.functions.keys().map(String::as_str).collect();
    functions.sort();
    assert_eq!(
        functions,
        [
            "connect",
            "data",
            "deliver",
            "describe",
            "helo",
            "mail-from",
            "rcpt-to",
            "retrieve"
        ]
    );

    let types = resolve
        .interfaces
        .iter()
        .find(|(_, i)| i.name.as_deref() == Some("types"))
        .expect("types")
        .1;
    for required in [
        "session",
        "envelope",
        "reply",
        "stage",
        "plugin-info",
        "verdict",
        "edit",
        "message",
    ] {
        assert!(
            types.types.contains_key(required),
            "types.{required} missing"
        );
    }
    let host = resolve
        .interfaces
        .iter()
        .find(|(_, i)| i.name.as_deref() == Some("host"))
        .expect("host")
        .1;
    for import in [
        "log",
        "config-get",
        "note-get",
        "note-set",
        "kv-get",
        "kv-set",
        "now-ms",
        "dns-lookup",
    ] {
        assert!(host.functions.contains_key(import), "host.{import} missing");
    }
}
