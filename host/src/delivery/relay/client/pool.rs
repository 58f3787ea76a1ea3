//! Idle client connections kept for the next message to the same host and route.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::SmtpClient;

/// Idle connections kept for the next message to the same host and route.
pub struct Pool {
    idle: Mutex<HashMap<(SocketAddr, String), Vec<SmtpClient>>>,
    keep: Duration,
}

impl Pool {
    pub fn new(keep: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            keep,
        }
    }

    /// A connection to `addr` for `route_key` that has not been idle too long.
    pub fn take(&self, addr: SocketAddr, route_key: &str) -> Option<SmtpClient> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&(addr, route_key.to_string()))?;
        while let Some(client) = list.pop() {
            if client.last_used.elapsed() < self.keep {
                return Some(client);
            }
        }
        None
    }

    pub fn put(&self, route_key: &str, client: SmtpClient) {
        if self.keep.is_zero() {
            tokio::spawn(client.quit());
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.entry((client.addr, route_key.to_string()))
            .or_default()
            .push(client);
    }

    /// Every idle connection, taken out of the pool (at shutdown, to say QUIT).
    pub fn take_all(&self) -> Vec<SmtpClient> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.drain().flat_map(|(_, list)| list).collect()
    }

    /// Closes connections idle for longer than the keep time.
    pub fn sweep(&self) {
        let expired: Vec<SmtpClient> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            for list in idle.values_mut() {
                let (old, fresh): (Vec<_>, Vec<_>) = std::mem::take(list)
                    .into_iter()
                    .partition(|c| c.last_used.elapsed() >= self.keep);
                *list = fresh;
                out.extend(old);
            }
            idle.retain(|_, list| !list.is_empty());
            out
        };
        for client in expired {
            tokio::spawn(client.quit());
        }
    }
}
