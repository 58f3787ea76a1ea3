//! The milter protocol (Sendmail's filter interface, spoken by Postfix, rspamd, OpenDKIM,
//! ClamAV): its wire format, kept apart from the client that will run milters as members of the
//! chain and the server that will let an MTA run mailgate's chain.

pub mod codec;
