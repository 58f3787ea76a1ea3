//! Onward delivery: which route a recipient domain takes, MX resolution, the SMTP client with
//! its connection pool, MTA-STS policies (`mta_sts`), sending to a destination (`transmit`), DKIM signing (`dkim`), the DATA encoding, and the
//! delivery status notifications' text (bounces).

pub mod client;
pub mod dkim;
pub mod dsn;
pub mod mta_sts;
pub mod mx;
pub mod route;
pub mod transmit;
pub mod wire;
