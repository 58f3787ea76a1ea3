//! The durable queue of accepted messages.

pub mod spool;
