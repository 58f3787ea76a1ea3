//! `cargo xtask dist`: the release binary as shipped. The release profile keeps line tables
//! (`debug = "line-tables-only"`) so that a profile of the gateway names files and lines; they
//! and the symbols are most of the binary's size, so the shipped binary goes without them and
//! they are kept in `mailgate.debug`, which the binary names (`.gnu_debuglink`, with its CRC)
//! and which has the same build id. perf, gdb and addr2line find it beside the binary, under
//! `/usr/lib/debug/.build-id/`, or in perf's build-id cache (docs/operations.md).

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Writes `out/mailgate` (stripped, linked to its debug file) and `out/mailgate.debug` from the
/// release binary `built`, and says their sizes.
pub fn split(built: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let debug = out.join("mailgate.debug");
    let shipped = out.join("mailgate");
    objcopy(&[
        OsStr::new("--only-keep-debug"),
        built.as_os_str(),
        debug.as_os_str(),
    ])?;
    // The link is made from the debug file's name and CRC, so it is named by its path here
    // and found by its name alone (beside the binary) later.
    let link = format!("--add-gnu-debuglink={}", debug.display());
    objcopy(&[
        OsStr::new("--strip-all"),
        OsStr::new(&link),
        built.as_os_str(),
        shipped.as_os_str(),
    ])?;
    for path in [built, &shipped, &debug] {
        let size = std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{:>12} bytes  {}", size, path.display());
    }
    Ok(())
}

fn objcopy(args: &[&OsStr]) -> Result<(), String> {
    let status = Command::new("objcopy")
        .args(args)
        .status()
        .map_err(|e| format!("cannot run objcopy (binutils): {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("objcopy {args:?} failed ({status})"))
    }
}
