//! POP3 (RFC 1939, 2449 CAPA, 2595 STLS, 5034 SASL) over the users' Maildirs: the command
//! parser (no I/O) and the session (AUTHORIZATION, TRANSACTION, UPDATE), with the chain's
//! retrieve stage deciding what each client sees.

pub mod command;
pub mod session;
