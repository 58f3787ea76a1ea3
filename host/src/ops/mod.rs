//! What an operator drives at run time: the admin socket, config checks, health, hot reload, and
//! the service manager's notifications.

pub mod admin_socket;
pub mod config_check;
pub mod health;
pub mod reload;
pub mod service_manager;
