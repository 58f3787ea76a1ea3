//! Sending one message to one destination: its hosts (the relay host, or the MX records in
//! preference order), a bounded number of connections per destination, pooled connections
//! reused, and the SMTP client's per-recipient results. At shutdown nothing new starts here:
//! no DNS lookup, no wait for a destination's slot, no connection, no next host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::client::{Failure, Outgoing, Pool, Settings, SmtpClient, MIN_REPLY_ALLOWANCE};
use super::mta_sts::{self, MtaSts};
use super::mx::{self, Candidate, ResolveError};
use super::route::Target;
use super::wire;
use crate::config::split_host_port;
use crate::dns::Dns;
use crate::mail::dsn::EnvelopeDsn;
use crate::mail::Route;

/// What the message's content asks of a peer, beyond its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Body {
    /// The client asked for SMTPUTF8.
    pub smtputf8: bool,
    /// The client sent the content as BODY=BINARYMIME.
    pub binary: bool,
}

/// What became of one message sent to one target.
#[derive(Debug)]
pub struct Transmitted {
    /// Per recipient: the final reply, or the failure.
    pub results: Vec<Result<String, Failure>>,
    /// The host that took the message offered DSN, so it was told what the client asked and
    /// reports from here on (RFC 3461 §6.2.1: else this gateway says `relayed`).
    pub dsn_passed: bool,
    /// The host that answered the transaction (the one that took the message, or the last
    /// one tried), for the report's Remote-MTA.
    pub remote: Option<String>,
}

impl Transmitted {
    /// Every recipient failed the same way, before any host answered for them.
    fn failed(rcpts: &[String], failure: Failure) -> Transmitted {
        Transmitted {
            remote: failure.remote.clone(),
            results: rcpts.iter().map(|_| Err(failure.clone())).collect(),
            dsn_passed: false,
        }
    }

    /// A host's answers for the recipients.
    fn answered(client: &SmtpClient, results: Vec<Result<String, Failure>>) -> Transmitted {
        Transmitted {
            results,
            dsn_passed: client.offers_dsn(),
            remote: Some(client.host.clone()),
        }
    }
}

/// The host that answered a transaction.
pub struct Peer {
    pub host: String,
    /// It offered DSN (see [`Transmitted::dsn_passed`]).
    pub dsn_passed: bool,
    /// Whether its certificate is valid for its name; `None` without TLS.
    pub certificate: Option<Result<(), String>>,
}

impl Peer {
    fn of(client: &SmtpClient) -> Peer {
        Peer {
            host: client.host.clone(),
            dsn_passed: client.offers_dsn(),
            certificate: client.certificate.clone(),
        }
    }
}

/// The relay's sending side, shared by every delivery attempt.
pub struct Transmitter {
    pool: Pool,
    settings: Settings,
    dns: Arc<dyn Dns>,
    mx_port: u16,
    per_destination: usize,
    destinations: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Per destination, the slowest wait from the content sent to the final reply seen since
    /// the start: at shutdown, what a transaction must have left to send its content.
    reply_times: Mutex<HashMap<String, Duration>>,
    /// MTA-STS policies for MX routes that follow them.
    mta_sts: Option<MtaSts>,
}

/// At shutdown, the content is assumed to travel at least this fast (bytes per second) when
/// judging whether it and its reply fit before the end of the drain.
const ASSUMED_RATE: u64 = 1 << 20;

/// Not started because the server is stopping.
fn not_started() -> Failure {
    Failure::stopped("not started: the server is stopping")
}

impl Transmitter {
    pub fn new(
        pool: Pool,
        settings: Settings,
        dns: Arc<dyn Dns>,
        mx_port: u16,
        per_destination: usize,
    ) -> Transmitter {
        Transmitter {
            pool,
            settings,
            dns,
            mx_port,
            per_destination,
            destinations: Mutex::new(HashMap::new()),
            reply_times: Mutex::new(HashMap::new()),
            mta_sts: None,
        }
    }

    /// MX routes with `mta-sts = "on"` follow the domains' policies.
    pub fn with_mta_sts(self, mta_sts: MtaSts) -> Transmitter {
        Transmitter {
            mta_sts: Some(mta_sts),
            ..self
        }
    }

    /// Closes pooled connections idle for too long.
    pub fn sweep(&self) {
        self.pool.sweep();
    }

    /// At shutdown, once no attempt runs: says QUIT on every pooled connection (together,
    /// each bounded by the client's own five seconds; the process may end first).
    pub async fn close_idle(&self) {
        let quits: Vec<_> = self
            .pool
            .take_all()
            .into_iter()
            .map(|client| tokio::spawn(client.quit()))
            .collect();
        for quit in quits {
            let _ = quit.await;
        }
    }

    /// Sends one message to one target's hosts in turn until one takes it (or refuses it for
    /// good). Per recipient: the final reply, or the failure.
    pub async fn transmit(
        &self,
        target: &Target,
        (sender, rcpts): (&str, &[String]),
        raw: &[u8],
        body: Body,
        dsn: &EnvelopeDsn,
    ) -> Transmitted {
        let fail_all = |f: Failure| Transmitted::failed(rcpts, f);
        if rcpts.is_empty() {
            return fail_all(Failure::temporary("no recipients"));
        }
        let deadline = &self.settings.deadline;
        if deadline.is_draining() {
            return fail_all(not_started());
        }
        let candidates = match self.candidates(target).await {
            Ok(c) => c,
            Err(ResolveError::Temporary(e)) => return fail_all(Failure::temporary(e)),
            Err(ResolveError::Permanent(e)) => {
                return fail_all(Failure::permanent(format!("5.1.2 {e}")))
            }
        };
        let sts = match (&self.mta_sts, &target.route) {
            (Some(sts), Route::Mx(domain)) if target.mta_sts => sts.policy(domain).await,
            _ => None,
        };
        let (candidates, target) = match mta_sts::restrict(sts.as_ref(), candidates, target) {
            Ok(restricted) => restricted,
            Err(failure) => return fail_all(failure),
        };
        let target = &target;
        let mut key = target.key();
        if sts
            .as_ref()
            .is_some_and(|a| a.policy.mode == mta_sts::Mode::Enforce)
        {
            // Checked connections under a policy are not pooled with unchecked ones.
            key.push_str("+mta-sts");
        }
        let slots = self.destination_slots(&key);
        // Waiting for a slot is not being under way: the drain ends the wait.
        let slot = tokio::select! {
            slot = slots.acquire() => slot.ok(),
            () = deadline.begun() => None,
        };
        let Some(_slot) = slot else {
            return fail_all(not_started());
        };
        // A BINARYMIME message goes as one last BDAT chunk, exactly; any other by DATA.
        let payload = if body.binary {
            [format!("BDAT {} LAST\r\n", raw.len()).as_bytes(), raw].concat()
        } else {
            wire::data_payload(raw)
        };
        let needs_utf8 = body.smtputf8 || !sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
        let out = Outgoing {
            sender,
            recipients: rcpts,
            payload: &payload,
            size: raw.len(),
            eight_bit: wire::is_8bit(raw),
            smtputf8: needs_utf8,
            binary: body.binary,
            reply_allowance: self.reply_allowance(&key, payload.len()),
            dsn,
        };
        let mut results = fail_all(Failure::temporary("no host could be tried"));
        let mut last_peer = None;
        for candidate in &candidates {
            match self.send_via(candidate, target, &key, &out).await {
                Err(failure) if failure.permanent => return fail_all(failure),
                // Stopping: no next host.
                Err(failure) if failure.stopped => return fail_all(failure),
                Err(failure) => {
                    tracing::info!(host = candidate.name, addr = %candidate.addr, "{}", failure.text);
                    results = fail_all(failure);
                }
                Ok((sent, peer)) => {
                    let all_temporary =
                        (sent.results.iter()).all(|r| matches!(r, Err(f) if !f.permanent));
                    results = sent;
                    last_peer = Some(peer);
                    if !all_temporary {
                        break;
                    }
                }
            }
        }
        mta_sts::outcome(sts.as_ref(), &results.results, last_peer.as_ref());
        results
    }

    /// One host: a pooled connection if there is one (a fresh one if that turns out stale).
    async fn send_via(
        &self,
        candidate: &Candidate,
        target: &Target,
        key: &str,
        out: &Outgoing<'_>,
    ) -> Result<(Transmitted, Peer), Failure> {
        let pool = &self.pool;
        if let Some(mut client) = pool.take(candidate.addr, key) {
            let sent = client.send(out).await;
            self.note_reply_time(key, &client);
            match sent {
                Ok(results) => {
                    let sent = (Transmitted::answered(&client, results), Peer::of(&client));
                    pool.put(key, client);
                    return Ok(sent);
                }
                Err(f) if f.permanent => {
                    pool.put(key, client);
                    return Err(f);
                }
                // Dropped: a transaction cut half-way ends with the connection.
                Err(f) if f.stopped => return Err(f),
                Err(f) => tracing::debug!("pooled connection failed, reconnecting: {}", f.text),
            }
        }
        if self.settings.deadline.is_draining() {
            return Err(not_started());
        }
        let mut client = SmtpClient::connect(candidate, target, &self.settings).await?;
        let sent = client.send(out).await;
        self.note_reply_time(key, &client);
        match sent {
            Ok(results) => {
                let sent = (Transmitted::answered(&client, results), Peer::of(&client));
                pool.put(key, client);
                Ok(sent)
            }
            Err(f) if f.permanent => {
                pool.put(key, client);
                Err(f)
            }
            Err(f) => Err(f),
        }
    }

    async fn candidates(&self, target: &Target) -> Result<Vec<Candidate>, ResolveError> {
        let dns = &*self.dns;
        match &target.route {
            Route::Relay(host_port) => {
                let (host, port) = split_host_port(host_port).ok_or_else(|| {
                    ResolveError::Permanent(format!("bad relay host {host_port:?}"))
                })?;
                let addrs = mx::addresses(dns, &host, port).await?;
                Ok(addrs
                    .into_iter()
                    .map(|addr| Candidate {
                        name: host.clone(),
                        addr,
                    })
                    .collect())
            }
            Route::Mx(domain) => mx::candidates(dns, domain, self.mx_port).await,
            Route::Local => Err(ResolveError::Temporary(
                "a local route reached the relay queue".into(),
            )),
        }
    }

    /// What a transaction to `key` must have left, at shutdown, to send `size` bytes of
    /// content and get the reply.
    fn reply_allowance(&self, key: &str, size: usize) -> Duration {
        let times = self.reply_times.lock().unwrap_or_else(|e| e.into_inner());
        let slowest = times.get(key).copied().unwrap_or_default();
        let transfer = Duration::from_millis((size as u64).saturating_mul(1000) / ASSUMED_RATE);
        slowest.max(MIN_REPLY_ALLOWANCE).saturating_add(transfer)
    }

    fn note_reply_time(&self, key: &str, client: &SmtpClient) {
        let Some(took) = client.data_reply_time else {
            return;
        };
        let mut times = self.reply_times.lock().unwrap_or_else(|e| e.into_inner());
        let slowest = times.entry(key.to_string()).or_default();
        *slowest = (*slowest).max(took);
    }

    fn destination_slots(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_destination.max(1))))
            .clone()
    }
}
