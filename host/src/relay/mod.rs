//! Onward delivery: which route a recipient domain takes, MX resolution, the SMTP client with
//! its connection pool, the DATA encoding, and the delivery status notifications (bounces).

pub mod client;
pub mod dsn;
pub mod mx;
pub mod route;
pub mod wire;
