//! How a plugin call fails: the kinds of fault and the text an operator reads about one (the
//! cause, the plugin's own last words on stderr, the named wasm frames).

use std::time::Duration;

use wasmtime::{Trap, WasmBacktrace};

/// Why a plugin call produced no usable outcome.
pub(super) enum Fault {
    /// The call did not return: a trap, its deadline or its memory cap.
    Trap(TrapKind, String),
    /// It returned something the host refuses (an edit not allowed at the stage...).
    Invalid(String),
    /// An outside filter hung up or broke its protocol.
    Peer(String),
    /// An outside filter known to be down, which reports its outage itself.
    Down(String),
}

#[derive(Clone, Copy)]
pub(super) enum TrapKind {
    Trap,
    Deadline,
    Memory,
}

impl Fault {
    /// The kind, as metrics label it.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Fault::Trap(TrapKind::Trap, _) => "trap",
            Fault::Trap(TrapKind::Deadline, _) => "deadline",
            Fault::Trap(TrapKind::Memory, _) => "memory",
            Fault::Invalid(_) => "invalid",
            Fault::Peer(_) | Fault::Down(_) => "peer",
        }
    }

    /// What the operator reads about it.
    pub(super) fn reason(&self) -> &str {
        match self {
            Fault::Trap(_, reason) | Fault::Invalid(reason) | Fault::Peer(reason) => reason,
            Fault::Down(reason) => reason,
        }
    }

    /// Reported elsewhere once per outage: no warning or fault count per call.
    pub(super) fn is_known_outage(&self) -> bool {
        matches!(self, Fault::Down(_))
    }
}

/// The fault a failed call or instantiation is: its memory cap, its deadline, or a trap.
pub(super) fn describe_trap(
    e: &wasmtime::Error,
    (memory_bytes, timeout): (usize, Duration),
    memory_hit: bool,
    output: &[String],
) -> Fault {
    if memory_hit {
        let text = format!("memory cap of {} MiB exceeded", memory_bytes >> 20);
        Fault::Trap(TrapKind::Memory, text)
    } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        let text = format!("deadline of {} ms exceeded", timeout.as_millis());
        Fault::Trap(TrapKind::Deadline, text)
    } else {
        Fault::Trap(TrapKind::Trap, trap_text(e, output))
    }
}

/// Frames of a wasm backtrace shown in a fault, innermost first.
const BACKTRACE_FRAMES: usize = 12;
/// Lines of the plugin's stderr shown in a fault (the end, where a traceback ends).
const OUTPUT_LINES: usize = 40;

/// What a trap says: the cause, the plugin's own words on stderr (a Python traceback, a JS
/// exception, a Rust panic message), and the named frames of the wasm backtrace.
pub(super) fn trap_text(e: &wasmtime::Error, output: &[String]) -> String {
    let cause = e.root_cause().to_string();
    let mut text = format!("trap: {}", cause.lines().next().unwrap_or("unknown"));
    if !output.is_empty() {
        text.push_str("\nplugin stderr:");
        for line in &output[output.len().saturating_sub(OUTPUT_LINES)..] {
            text.push_str("\n  ");
            text.push_str(line);
        }
    }
    if let Some(trace) = e.downcast_ref::<WasmBacktrace>() {
        let frames: Vec<String> = trace
            .frames()
            .iter()
            .filter_map(|f| {
                f.func_name()
                    .map(|name| format!("{}!{name}", f.module().name().unwrap_or("?")))
            })
            .take(BACKTRACE_FRAMES)
            .collect();
        if !frames.is_empty() {
            text.push_str("\nwasm backtrace: ");
            text.push_str(&frames.join(" <- "));
        }
    }
    text
}
