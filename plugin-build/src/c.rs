//! C plugins: bindings generated from the WIT contract (wit-bindgen's C generator, used as a
//! library), compiled with zig's clang for wasm32-wasi as a reactor, then turned into a
//! component with wasmtime's preview1 adapter (only kept when the module imports WASI).

use std::path::{Path, PathBuf};
use std::process::Command;

use wit_bindgen_core::wit_parser::Resolve;
use wit_bindgen_core::Files;

use crate::tools::{run, Tools};
use crate::Error;

/// The world every plugin implements; the generated files are named after it.
use crate::world::{c_sources, WORLD};

/// The C helpers: verdict builders, edits, strings, config.
pub const SDK_HEADER: &str = include_str!("../c/mailgate.h");
const SDK_SOURCE: &str = include_str!("../c/mailgate.c");

/// Builds the C sources in `dir` (every `*.c` directly in it) into the component `out`.
pub fn build(tools: &Tools, wit: &Path, dir: &Path, out: &Path) -> Result<(), Error> {
    // Generated bindings, the helpers and the core module, beside the component (one place per
    // output, so builds of different plugins never share it; editors find the headers there).
    let work = out.with_extension("c-build");
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let mut generated = write_bindings(wit, &work)?;
    // A plugin that brings its own mailgate.h (built for an older contract) keeps its helpers.
    if !dir.join("mailgate.h").exists() {
        generated.push(write_sdk(&work)?);
    }
    let sources = c_sources(dir)?;
    let core = work.join("core.wasm");
    let zig = tools.zig()?;
    let mut cc = Command::new(&zig.python);
    cc.args(["-m", "ziglang", "cc", "--target=wasm32-wasi", "-O2", "-s"])
        .args(["-mexec-model=reactor", "-Wall"])
        // A 1 MiB stack instead of zig's 16 MiB, so small memory caps fit.
        .arg("-Wl,-z,stack-size=1048576")
        .arg("-I")
        .arg(&work)
        .arg("-o")
        .arg(&core)
        .args(&sources)
        .args(&generated)
        .envs(zig.env());
    run(&mut cc)?;
    let module = std::fs::read(&core).map_err(|e| Error::io(&core, e))?;
    let component = componentize(&module)?;
    std::fs::write(out, component).map_err(|e| Error::io(out, e))
}

/// Writes `plugin.h`, `plugin.c` and `plugin_component_type.o` into `to`; returns the files
/// the compiler must be given (the source and the object with the component type).
pub fn write_bindings(wit: &Path, to: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .map_err(|e| Error::Contract(format!("{}: {e:#}", wit.display())))?;
    let world = resolve
        .select_world(&[package], Some(WORLD))
        .map_err(|e| Error::Contract(format!("{e:#}")))?;
    let mut files = Files::default();
    // Borrowed messages are dropped by the bindings when a stage returns.
    wit_bindgen_c::Opts {
        autodrop_borrows: wit_bindgen_c::Enabled::Yes,
        ..Default::default()
    }
    .build()
    .generate(&mut resolve, world, &mut files)
    .map_err(|e| Error::Contract(format!("C bindings: {e:#}")))?;
    let mut compile = Vec::new();
    for (name, contents) in files.iter() {
        let path = to.join(name);
        std::fs::write(&path, contents).map_err(|e| Error::io(&path, e))?;
        if !name.ends_with(".h") {
            compile.push(path);
        }
    }
    Ok(compile)
}

/// The C helpers plugins include (`mailgate.h`, `mailgate.c`); returns the source to compile.
fn write_sdk(to: &Path) -> Result<PathBuf, Error> {
    for (name, contents) in [("mailgate.h", SDK_HEADER), ("mailgate.c", SDK_SOURCE)] {
        let path = to.join(name);
        std::fs::write(&path, contents).map_err(|e| Error::io(&path, e))?;
    }
    Ok(to.join("mailgate.c"))
}

/// A component from a core module carrying its component type; WASI preview1 imports (from
/// wasi-libc) go through the reactor adapter.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, Error> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let component = |e: anyhow::Error| Error::Component(format!("{e:#}"));
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .map_err(component)?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .map_err(component)?
        .encode()
        .map_err(component)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_declare_exactly_the_stages_a_plugin_defines() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = std::env::temp_dir().join(format!("mailgate-c-bindings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("plugin.c"),
            "void exports_mailgate_plugin_data_handle(int x) {}\n\
             void exports_mailgate_plugin_rcpt_to_handle(int y) {}\n",
        )
        .unwrap();
        let wit = crate::world::prepare(
            &Tools::new(&dir, "test"),
            &root.join("wit"),
            crate::Language::C,
            &dir,
            &dir.join("wit"),
        )
        .unwrap();
        let compile = write_bindings(&wit, &dir).unwrap();
        let header = std::fs::read_to_string(dir.join("plugin.h")).unwrap();
        for export in ["info_describe", "data_handle", "rcpt_to_handle"] {
            assert!(
                header.contains(&format!("exports_mailgate_plugin_{export}(")),
                "{export} missing from plugin.h"
            );
        }
        assert!(!header.contains("exports_mailgate_plugin_helo_handle("));
        assert!(compile
            .iter()
            .any(|p| p.ends_with("plugin_component_type.o")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
