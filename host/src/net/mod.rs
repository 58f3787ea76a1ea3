//! Connections from the network, whatever their protocol.

pub mod drain;
