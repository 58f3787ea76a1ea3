//! Small operating-system helpers: blocking work from async code, the data directory's lock,
//! secrets read from private files.

pub mod blocking;
pub mod datadir;
pub mod secret;
