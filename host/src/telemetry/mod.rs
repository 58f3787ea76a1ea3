//! What the gateway tells its operators besides logs: Prometheus metrics and the health
//! check on a listener of their own.

pub mod endpoint;
pub mod journal;
pub mod metrics;
pub mod process;
pub mod trace;
