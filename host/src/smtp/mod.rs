//! The SMTP server: command parsing and the DATA reader (protocol, no I/O), the connection
//! buffer, the session state machine, TLS, and the listeners.

pub mod command;
pub mod data;
pub mod io;
mod journal;
pub mod reply;
pub mod server;
mod session;
mod tls;
