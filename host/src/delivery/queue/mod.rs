//! The durable queue of accepted messages: the spool (message files, group commit), the
//! per-message delivery state, and the relay queue — its manager (`manager`), when each message
//! is due (`schedule`), one delivery attempt (`attempt`), bounces (`bounce`) — with the
//! operator's commands, and the quarantine (`quarantine`). Sending itself is the relay's (`relay::transmit`).

mod attempt;
pub mod bounce;
pub mod commands;
pub mod intake;
pub mod manager;
pub mod quarantine;
mod schedule;
mod spares;
pub mod spool;
pub mod state;
