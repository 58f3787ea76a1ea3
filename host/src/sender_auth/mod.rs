//! Sender authentication of received mail: SPF (RFC 7208) for the MAIL FROM and HELO
//! identities, DKIM (RFC 6376) for every signature, DMARC (RFC 9989) with alignment and the
//! organisational domain found by its DNS tree walk, and ARC (RFC 8617) chain validation.
//!
//! The checks are `mail-auth`'s, run through the gateway's resolver and a bounded cache of
//! parsed answers. Only the methods the config names run (DMARC brings SPF and DKIM with it,
//! without reporting them). All the lookups of one message share one budget (`[auth]
//! timeout-ms`): SPF starts at MAIL FROM with its two identities side by side; when the message
//! is in, every DKIM key, ARC key and DMARC record it names is fetched at once, beside what SPF
//! still waits for, and the methods are then judged from those answers. Each method and
//! identity has its own result: one that did not get its answers in time says `temperror`,
//! the others say what they found, and one with nothing to check says `none`.

mod cache;
pub mod key;
pub mod results;
mod seal;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::resolver::{ToFqdn, UnwrapTxtRecord};
use mail_auth::common::verify::{DomainKey, VerifySignature};
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Dmarc;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    MessageAuthenticator, SpfOutput, SpfResult, Txt,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{AuthMethod, Config};
use crate::message::header::HeaderBlock;
use cache::{Caches, MessageTxt};
pub use results::{
    ArcCheck, AuthResults, DkimCheck, DmarcCheck, DmarcPolicy, Outcome, SpfCheck, SpfIdentity,
};
pub use seal::{SealInput, Sealer};

/// Why a lookup failed when its answer did not come within the budget.
const LATE: &str = "no DNS answer in time";

/// At most this many names are fetched ahead for one message (a message naming more keys
/// gets the rest looked up as its checks reach them, within the same budget).
const MAX_PREFETCH: usize = 32;

/// Who sent the message, as the SMTP session saw it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub client_ip: IpAddr,
    pub helo: String,
    /// The MAIL FROM address; empty for the null sender.
    pub sender: String,
}

impl Envelope {
    /// The identity SPF checks for MAIL FROM: the address, or `postmaster@` the HELO name
    /// for the null sender (RFC 7208 §2.4).
    fn mail_from_identity(&self) -> String {
        if self.sender.is_empty() {
            format!("postmaster@{}", self.helo)
        } else {
            self.sender.clone()
        }
    }
}

/// The SPF verdicts of one transaction, kept until the message is in; each identity with the
/// reason it is `temperror`, when its answers did not come in time.
#[derive(Debug, Clone)]
pub struct SpfOutcome {
    helo: SpfOutput,
    helo_reason: Option<String>,
    mail_from: SpfOutput,
    mail_from_reason: Option<String>,
}

impl SpfOutcome {
    /// Both identities `temperror` (the check itself did not finish).
    fn late(envelope: &Envelope) -> SpfOutcome {
        let identity = envelope.mail_from_identity();
        SpfOutcome {
            helo: temperror_spf(&envelope.helo),
            helo_reason: Some(late_error().to_string()),
            mail_from: temperror_spf(domain_of(&identity)),
            mail_from_reason: Some(late_error().to_string()),
        }
    }
}

pub struct Verifier {
    authenticator: MessageAuthenticator,
    caches: Caches,
    methods: Vec<AuthMethod>,
    /// Lives as long as the process (the ARC results a seal carries borrow it).
    authserv_id: &'static str,
    hostname: String,
    /// The time all the lookups of one message may take (`[auth] timeout-ms`).
    budget: Duration,
    sealer: Option<Sealer>,
}

/// A message after the checks: its bytes (unchanged), the results, and what an ARC seal of it
/// needs, when the gateway seals.
pub struct Checked {
    pub message: Vec<u8>,
    pub results: AuthResults,
    pub seal: Option<SealInput>,
}

/// What DKIM, ARC and DMARC found for one message, in mail-auth's form.
struct Judged<'x> {
    dkim: Vec<DkimOutput<'x>>,
    arc: Option<ArcOutput<'x>>,
    dmarc: Option<DmarcOutput>,
}

impl Verifier {
    /// None when the config neither verifies nor seals anything; an unusable `[arc-seal]` key
    /// is an error naming its file. Sealing brings ARC verification with it (the seal states
    /// the chain's validation).
    pub fn new(config: &Config, resolver: TokioResolver) -> Result<Option<Verifier>, String> {
        let sealer = Sealer::load(config)?;
        let auth = &config.auth;
        let mut methods = auth.verify.clone();
        if sealer.is_some() && !methods.contains(&AuthMethod::Arc) {
            methods.push(AuthMethod::Arc);
        }
        if methods.is_empty() {
            return Ok(None);
        }
        let hostname = &config.server.hostname;
        let authserv_id = auth.authserv_id.clone().unwrap_or_else(|| hostname.clone());
        Ok(Some(Verifier {
            authenticator: MessageAuthenticator(resolver),
            caches: Caches::new(auth.cache_entries),
            methods,
            authserv_id: Box::leak(authserv_id.into_boxed_str()),
            hostname: hostname.clone(),
            budget: Duration::from_millis(auth.timeout_ms.max(1)),
            sealer,
        }))
    }

    pub fn authserv_id(&self) -> &str {
        self.authserv_id
    }

    /// The end of the budget of lookups that start now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.budget
    }

    /// `raw` with the gateway's ARC set on top; unchanged (and the reason logged) when it
    /// cannot be sealed.
    pub fn seal(&self, raw: Vec<u8>, input: &SealInput) -> Vec<u8> {
        let Some(sealer) = &self.sealer else {
            return raw;
        };
        match crate::sys::blocking::run(|| sealer.seal(&raw, input)) {
            Ok(set) => [set.as_bytes(), &raw].concat(),
            Err(e) => {
                tracing::warn!("message not sealed: {e}");
                raw
            }
        }
    }

    fn runs(&self, method: AuthMethod) -> bool {
        self.methods.contains(&method)
    }

    /// SPF runs when it is reported, or for DMARC.
    pub fn checks_spf(&self) -> bool {
        self.runs(AuthMethod::Spf) || self.runs(AuthMethod::Dmarc)
    }

    /// Evaluates SPF for the HELO name and the MAIL FROM identity side by side, each on its
    /// own: one whose answers are not in by `deadline` is `temperror`, the other stands.
    pub async fn spf(&self, envelope: &Envelope, deadline: Instant) -> SpfOutcome {
        let identity = envelope.mail_from_identity();
        let mail_from =
            self.authenticator
                .verify_spf(self.caches.attach(SpfParameters::verify_mail_from(
                    envelope.client_ip,
                    &envelope.helo,
                    &self.hostname,
                    &identity,
                )));
        let (helo, mail_from) = tokio::join!(
            tokio::time::timeout_at(deadline, self.spf_helo(envelope)),
            tokio::time::timeout_at(deadline, mail_from)
        );
        let (helo, helo_reason) = match helo {
            Ok(output) => (output, None),
            Err(_) => (
                temperror_spf(&envelope.helo),
                Some(late_error().to_string()),
            ),
        };
        let (mail_from, mail_from_reason) = match mail_from {
            Ok(output) => (output, None),
            Err(_) => (
                temperror_spf(domain_of(&identity)),
                Some(late_error().to_string()),
            ),
        };
        SpfOutcome {
            helo,
            helo_reason,
            mail_from,
            mail_from_reason,
        }
    }

    async fn spf_helo(&self, envelope: &Envelope) -> SpfOutput {
        // An address literal or a bare word has no SPF record to look up (RFC 7208 §2.3).
        let helo = envelope.helo.as_str();
        if !helo.contains('.') || helo.starts_with('[') || helo.parse::<IpAddr>().is_ok() {
            return SpfOutput::new(helo.to_string()).with_result(SpfResult::None);
        }
        self.authenticator
            .verify_spf(self.caches.attach(SpfParameters::verify_ehlo(
                envelope.client_ip,
                helo,
                &self.hostname,
            )))
            .await
    }

    /// DKIM, ARC and DMARC on the message as the client sent it, with the SPF verdicts of the
    /// check started at MAIL FROM (`spf`; made here when SPF runs and none was started).
    /// Reading the message (its body hashes) is CPU work and leaves the runtime's worker for
    /// the time; waiting for DNS does not hold a thread.
    pub async fn check_message(
        &self,
        message: Vec<u8>,
        envelope: Envelope,
        spf: Option<JoinHandle<SpfOutcome>>,
    ) -> Checked {
        let (results, seal) = self.message(&message, &envelope, spf).await;
        Checked {
            message,
            results,
            seal,
        }
    }

    async fn message(
        &self,
        raw: &[u8],
        envelope: &Envelope,
        spf: Option<JoinHandle<SpfOutcome>>,
    ) -> (AuthResults, Option<SealInput>) {
        let deadline = self.deadline();
        let spf = async {
            match spf {
                // The task ends by its own deadline, which came before this one.
                Some(task) => match tokio::time::timeout_at(deadline, task).await {
                    Ok(Ok(outcome)) => Some(outcome),
                    _ => Some(SpfOutcome::late(envelope)),
                },
                None if self.checks_spf() => Some(self.spf(envelope, deadline).await),
                None => None,
            }
        };
        let Some(message) = crate::sys::blocking::run(|| AuthenticatedMessage::parse(raw)) else {
            let spf = spf.await;
            return (self.unreadable(envelope, spf.as_ref()), None);
        };
        let found = self.caches.for_message();
        let (spf, ()) = tokio::join!(spf, self.prefetch(&message, envelope, &found, deadline));
        let judged = self
            .judge(&message, envelope, spf.as_ref(), &found, deadline)
            .await;
        let chain = self
            .sealer
            .as_ref()
            .and(judged.arc.as_ref())
            .map(|arc| arc.result().clone());
        let spf_checks = self.spf_checks(envelope, spf.as_ref());
        // A missing answer matters to DMARC only for an identity that could have aligned.
        let from = judged.dmarc.as_ref().map_or("", |d| d.domain());
        let dkim_unfinished = judged.dkim.iter().any(|d| {
            matches!(d.result(), DkimResult::TempError(_))
                && d.signature().is_some_and(|s| could_align(&s.d, from))
        });
        let spf_unfinished = spf.as_ref().is_some_and(|s| {
            s.mail_from.result() == SpfResult::TempError && could_align(s.mail_from.domain(), from)
        });
        let results = AuthResults {
            authserv_id: self.authserv_id.to_string(),
            client_ip: envelope.client_ip,
            spf: spf_checks,
            dkim: self.runs(AuthMethod::Dkim).then(|| {
                unreadable_signatures(&message)
                    .chain(judged.dkim.iter().map(dkim_check))
                    .collect()
            }),
            dmarc: judged
                .dmarc
                .as_ref()
                .map(|d| dmarc_check(d, dkim_unfinished || spf_unfinished)),
            arc: judged.arc.as_ref().map(arc_check),
        };
        let seal = chain.map(|chain| SealInput {
            results: results.sealed_value(),
            chain,
        });
        (results, seal)
    }

    /// Fetches, all at once, every TXT record the message's checks will read: the key of each
    /// DKIM signature and ARC set, and the DMARC records of the tree walks of the From domain,
    /// the MAIL FROM domain and each signing domain. What is found lands in the cache; what is
    /// missing or did not come by `deadline` is kept in `found` for this message.
    async fn prefetch<'a>(
        &'a self,
        message: &AuthenticatedMessage<'_>,
        envelope: &Envelope,
        found: &'a MessageTxt<'a>,
        deadline: Instant,
    ) {
        let mut keys: Vec<Box<str>> = Vec::new();
        if self.runs(AuthMethod::Dkim) || self.runs(AuthMethod::Dmarc) {
            keys.extend(
                message
                    .dkim_headers
                    .iter()
                    .map(|h| h.header.domain_key().to_fqdn()),
            );
        }
        if self.runs(AuthMethod::Arc) && !message.has_arc_errors {
            keys.extend(
                message
                    .as_headers
                    .iter()
                    .map(|h| h.header.domain_key().to_fqdn()),
            );
            keys.extend(
                message
                    .ams_headers
                    .iter()
                    .map(|h| h.header.domain_key().to_fqdn()),
            );
        }
        let mut policies: Vec<Box<str>> = Vec::new();
        if self.runs(AuthMethod::Dmarc) {
            let from = message.from.iter().filter_map(|a| a.rsplit_once('@'));
            let mail_from = envelope.mail_from_identity();
            let domains = from
                .map(|(_, d)| d.to_string())
                .take(1)
                .chain([domain_of(&mail_from).to_string()])
                .chain(message.dkim_headers.iter().map(|h| h.header.d.clone()));
            for domain in domains {
                policies.extend(dmarc_walk(&mail_auth::common::to_a_label(&domain)));
            }
        }
        for names in [&mut keys, &mut policies] {
            names.sort();
            names.dedup();
        }
        let keys = keys
            .into_iter()
            .map(|name| self.fetch::<DomainKey>(name, found, deadline));
        let policies = policies
            .into_iter()
            .map(|name| self.fetch::<Dmarc>(name, found, deadline));
        let mut lookups: Vec<Pin<Box<dyn Future<Output = ()> + Send + 'a>>> = Vec::new();
        for lookup in keys
            .map(|f| Box::pin(f) as _)
            .chain(policies.map(|f| Box::pin(f) as _))
        {
            if lookups.len() < MAX_PREFETCH {
                lookups.push(lookup);
            }
        }
        join_all(lookups).await;
    }

    /// One TXT lookup for `prefetch`.
    async fn fetch<T>(&self, name: Box<str>, found: &MessageTxt<'_>, deadline: Instant)
    where
        T: TxtRecordParser + Into<Txt> + UnwrapTxtRecord,
    {
        let lookup = self
            .authenticator
            .txt_lookup::<T>(name.clone(), Some(found));
        let error = match tokio::time::timeout_at(deadline, lookup).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e,
            Err(_) => late_error(),
        };
        found.keep_failure(name, error);
    }

    /// DKIM, ARC and DMARC judged from the answers fetched: each within what is left of the
    /// budget (nothing, when the lookups took all of it, yet the answers are at hand), and
    /// `temperror` on its own when it still had to wait for one.
    async fn judge<'x>(
        &'x self,
        message: &'x AuthenticatedMessage<'x>,
        envelope: &Envelope,
        spf: Option<&'x SpfOutcome>,
        found: &'x MessageTxt<'x>,
        deadline: Instant,
    ) -> Judged<'x> {
        let dkim = if self.runs(AuthMethod::Dkim) || self.runs(AuthMethod::Dmarc) {
            let verify = self
                .authenticator
                .verify_dkim(self.caches.attach_message(message, found));
            match tokio::time::timeout_at(deadline, verify).await {
                Ok(outputs) => outputs,
                Err(_) => message
                    .dkim_headers
                    .iter()
                    .map(|h| DkimOutput::temp_err(late_error()).with_signature(&h.header))
                    .collect(),
            }
        } else {
            Vec::new()
        };
        let arc = if self.runs(AuthMethod::Arc) {
            let verify = self
                .authenticator
                .verify_arc(self.caches.attach_message(message, found));
            Some(
                tokio::time::timeout_at(deadline, verify)
                    .await
                    .unwrap_or_else(|_| {
                        ArcOutput::default().with_result(DkimResult::TempError(late_error()))
                    }),
            )
        } else {
            None
        };
        let dmarc = match (spf, self.runs(AuthMethod::Dmarc)) {
            (Some(spf), true) => Some(
                self.dmarc(message, envelope, spf, &dkim, found, deadline)
                    .await,
            ),
            _ => None,
        };
        Judged { dkim, arc, dmarc }
    }

    async fn dmarc<'x>(
        &self,
        message: &'x AuthenticatedMessage<'x>,
        envelope: &Envelope,
        spf: &'x SpfOutcome,
        dkim: &'x [DkimOutput<'x>],
        found: &'x MessageTxt<'x>,
        deadline: Instant,
    ) -> DmarcOutput {
        let mail_from = envelope.mail_from_identity();
        let params = DmarcParameters::new(message, dkim, domain_of(&mail_from), &spf.mail_from);
        let verify = self
            .authenticator
            .verify_dmarc(self.caches.attach_message(params, found));
        match tokio::time::timeout_at(deadline, verify).await {
            Ok(output) => output,
            Err(_) => {
                let from = message.from.first().map_or("", |a| domain_of(a));
                DmarcOutput::default()
                    .with_domain(from)
                    .with_spf_result(DmarcResult::TempError(late_error()))
                    .with_dkim_result(DmarcResult::TempError(late_error()))
            }
        }
    }

    /// Results for a message that cannot be read: `permerror` for each configured message
    /// method (SPF, about the envelope, stands).
    fn unreadable(&self, envelope: &Envelope, spf: Option<&SpfOutcome>) -> AuthResults {
        let why = Some("unreadable message".to_string());
        AuthResults {
            authserv_id: self.authserv_id.to_string(),
            client_ip: envelope.client_ip,
            spf: self.spf_checks(envelope, spf),
            dkim: self.runs(AuthMethod::Dkim).then(|| {
                vec![DkimCheck {
                    outcome: Outcome::Permerror,
                    domain: String::new(),
                    selector: String::new(),
                    algorithm: String::new(),
                    signature_prefix: String::new(),
                    reason: why.clone(),
                }]
            }),
            dmarc: self.runs(AuthMethod::Dmarc).then(|| DmarcCheck {
                outcome: Outcome::Permerror,
                domain: String::new(),
                policy: None,
                spf_aligned: false,
                dkim_aligned: false,
                reason: why.clone(),
            }),
            arc: self.runs(AuthMethod::Arc).then(|| ArcCheck {
                outcome: Outcome::Permerror,
                sealers: Vec::new(),
                reason: why.clone(),
            }),
        }
    }

    /// The SPF checks to report: MAIL FROM, then HELO, when SPF itself is configured.
    fn spf_checks(&self, envelope: &Envelope, spf: Option<&SpfOutcome>) -> Vec<SpfCheck> {
        let Some(spf) = spf.filter(|_| self.runs(AuthMethod::Spf)) else {
            return Vec::new();
        };
        vec![
            spf_check(
                SpfIdentity::MailFrom,
                &spf.mail_from,
                &envelope.mail_from_identity(),
                &spf.mail_from_reason,
            ),
            spf_check(
                SpfIdentity::Helo,
                &spf.helo,
                &envelope.helo,
                &spf.helo_reason,
            ),
        ]
    }

    /// Parsed TXT records in the cache now (benchmarks, tests).
    pub fn cached_records(&self) -> usize {
        self.caches.txt_entries()
    }
}

/// The names a DMARC tree walk (RFC 9989 §4.10) from `domain` asks for, as mail-auth walks:
/// the domain itself, then (from eight labels up) its last seven, then one label less at a
/// time down to the top-level domain.
fn dmarc_walk(domain: &str) -> Vec<Box<str>> {
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    let total = labels.len();
    let mut names = Vec::new();
    if total < 2 {
        return names;
    }
    let mut count = total;
    loop {
        let name = labels[total - count..].join(".");
        names.push(format!("_dmarc.{name}.").to_fqdn());
        if count == 1 {
            break;
        }
        count = if count >= 8 { 7 } else { count - 1 };
    }
    names
}

/// Whether `domain` might align with the From domain `from` (RFC 9989 §4.4, relaxed): the
/// same name, or one within the other, or the same last two labels (an organisational domain
/// is at least that; the tree walk that would say more did not answer).
fn could_align(domain: &str, from: &str) -> bool {
    let (domain, from) = (domain.to_ascii_lowercase(), from.to_ascii_lowercase());
    let last_two = |d: &str| {
        let labels: Vec<&str> = d.trim_end_matches('.').rsplit('.').take(2).collect();
        labels.join(".")
    };
    domain == from
        || domain.ends_with(&format!(".{from}"))
        || from.ends_with(&format!(".{domain}"))
        || last_two(&domain) == last_two(&from)
}

/// Polls every future until all are done (the lookups of one message, side by side).
async fn join_all<'a>(mut futures: Vec<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>) {
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// What a lookup that did not come in time reads as: a resolver failure, which mail-auth
/// judges `temperror`.
fn late_error() -> mail_auth::Error {
    mail_auth::Error::Dns(mail_auth::DnsError::Resolver(LATE.into()))
}

/// `raw` with `field` on top and without any `Authentication-Results` field that claims
/// `authserv_id` — such a field came from outside and is forged (RFC 8601 §5).
pub fn stamp(raw: &[u8], field: &str, authserv_id: &str) -> Vec<u8> {
    let header = HeaderBlock::parse(raw, 0);
    let mut out = Vec::with_capacity(raw.len() + field.len());
    out.extend_from_slice(field.as_bytes());
    let mut copied = 0;
    for (i, found) in header.fields.iter().enumerate() {
        let forged = header
            .name(raw, i)
            .eq_ignore_ascii_case("Authentication-Results")
            && claimed_id(&raw[found.value.clone()])
                .is_some_and(|id| id.eq_ignore_ascii_case(authserv_id));
        if forged {
            out.extend_from_slice(&raw[copied..found.whole.start]);
            copied = found.whole.end;
        }
    }
    out.extend_from_slice(&raw[copied..]);
    out
}

/// The authserv-id an `Authentication-Results` value starts with: comments and folding
/// skipped, quotes removed.
fn claimed_id(value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix('(') {
        rest = after.split_once(')').map_or("", |(_, r)| r).trim_start();
    }
    let id = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or(""),
        None => rest
            .split(|c: char| c == ';' || c == '(' || c.is_whitespace())
            .next()
            .unwrap_or(""),
    };
    (!id.is_empty()).then(|| id.to_string())
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or(address, |(_, d)| d)
}

fn temperror_spf(domain: &str) -> SpfOutput {
    SpfOutput::new(domain.to_string()).with_result(SpfResult::TempError)
}

fn spf_check(
    identity: SpfIdentity,
    output: &SpfOutput,
    subject: &str,
    reason: &Option<String>,
) -> SpfCheck {
    SpfCheck {
        identity,
        outcome: match output.result() {
            SpfResult::Pass => Outcome::Pass,
            SpfResult::Fail => Outcome::Fail,
            SpfResult::SoftFail => Outcome::Softfail,
            SpfResult::Neutral => Outcome::Neutral,
            SpfResult::TempError => Outcome::Temperror,
            SpfResult::PermError => Outcome::Permerror,
            SpfResult::None => Outcome::None,
        },
        domain: output.domain().to_string(),
        subject: subject.to_string(),
        reason: reason.clone(),
    }
}

fn dkim_outcome(result: &DkimResult) -> (Outcome, Option<String>) {
    match result {
        DkimResult::Pass => (Outcome::Pass, None),
        // A body that no longer matches its hash failed verification (RFC 6376 §6.1.3, RFC 8617
        // §5.2), though mail-auth files it as neutral.
        DkimResult::Neutral(
            e @ (mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch)
            | mail_auth::Error::Arc(mail_auth::arc::ArcError::FailedBodyHashMatch)),
        ) => (Outcome::Fail, Some(e.to_string())),
        DkimResult::Neutral(e) => (Outcome::Neutral, Some(e.to_string())),
        DkimResult::Fail(e) => (Outcome::Fail, Some(e.to_string())),
        DkimResult::PermError(e) => (Outcome::Permerror, Some(e.to_string())),
        DkimResult::TempError(e) => (Outcome::Temperror, Some(e.to_string())),
        DkimResult::None => (Outcome::None, None),
    }
}

fn dkim_check(output: &DkimOutput<'_>) -> DkimCheck {
    use base64::Engine;
    use mail_auth::common::crypto::Algorithm;
    let (outcome, reason) = dkim_outcome(output.result());
    let signature = output.signature();
    DkimCheck {
        outcome,
        domain: signature.map(|s| s.d.clone()).unwrap_or_default(),
        selector: signature.map(|s| s.s.clone()).unwrap_or_default(),
        algorithm: signature
            .map(|s| match s.a {
                Algorithm::RsaSha1 => "rsa-sha1",
                Algorithm::RsaSha256 => "rsa-sha256",
                Algorithm::Ed25519Sha256 => "ed25519-sha256",
            })
            .unwrap_or_default()
            .to_string(),
        signature_prefix: signature
            .map(|s| base64::engine::general_purpose::STANDARD.encode(&s.b[..s.b.len().min(6)]))
            .unwrap_or_default(),
        reason,
    }
}

/// DKIM-Signature fields too broken to parse, which mail-auth leaves out of its results
/// (except DKIM-specific faults, which it reports itself): each is `neutral`, a signature with
/// syntax errors (RFC 8601 §2.7.1).
fn unreadable_signatures<'a>(
    message: &'a AuthenticatedMessage<'_>,
) -> impl Iterator<Item = DkimCheck> + 'a {
    message
        .errors
        .iter()
        .filter(|h| {
            h.name.eq_ignore_ascii_case(b"DKIM-Signature")
                && !matches!(h.header, mail_auth::Error::Dkim(_))
        })
        .map(|h| DkimCheck {
            outcome: Outcome::Neutral,
            domain: String::new(),
            selector: String::new(),
            algorithm: String::new(),
            signature_prefix: String::new(),
            reason: Some(format!("unreadable signature: {}", h.header)),
        })
}

/// `unfinished`: SPF of MAIL FROM or a DKIM signature is `temperror`, so that a message that
/// aligns nothing might have aligned with the missing answer: that is `temperror`, not `fail`.
fn dmarc_check(output: &DmarcOutput, unfinished: bool) -> DmarcCheck {
    use mail_auth::dmarc::Policy;
    let spf = output.spf_result();
    let dkim = output.dkim_result();
    let error = [spf, dkim].into_iter().find_map(|r| match r {
        DmarcResult::TempError(e) => Some((Outcome::Temperror, e.to_string())),
        DmarcResult::PermError(e) => Some((Outcome::Permerror, e.to_string())),
        _ => None,
    });
    let spf_aligned = *spf == DmarcResult::Pass;
    let dkim_aligned = *dkim == DmarcResult::Pass;
    let record = output.dmarc_record();
    let (outcome, reason) = match error {
        Some((outcome, reason)) => (outcome, Some(reason)),
        None if spf_aligned || dkim_aligned => (Outcome::Pass, None),
        None if record.is_some() && unfinished => (
            Outcome::Temperror,
            Some("SPF or DKIM had no DNS answer in time: alignment unknown".into()),
        ),
        None if record.is_some() => (
            Outcome::Fail,
            Some("neither SPF nor DKIM passed aligned with the From domain".into()),
        ),
        None => (Outcome::None, None),
    };
    DmarcCheck {
        outcome,
        domain: output.domain().to_string(),
        policy: record.and(match output.policy() {
            Policy::Reject => Some(DmarcPolicy::Reject),
            Policy::Quarantine => Some(DmarcPolicy::Quarantine),
            Policy::None | Policy::Unspecified => Some(DmarcPolicy::None),
        }),
        spf_aligned,
        dkim_aligned,
        reason,
    }
}

fn arc_check(output: &ArcOutput<'_>) -> ArcCheck {
    let (outcome, reason) = dkim_outcome(output.result());
    ArcCheck {
        outcome,
        sealers: output
            .sets()
            .iter()
            .map(|set| set.seal.header.d.clone())
            .collect(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_results_that_claim_our_name() {
        let raw = b"Authentication-Results: MX.example.net; spf=pass\r\n\
            Subject: hi\r\n\
            Authentication-Results: (relay) \"mx.example.net\";\r\n\tdkim=pass\r\n\
            Authentication-Results: other.example.org; dmarc=pass\r\n\
            Authentication-Results: mx.example.net.evil.test; dmarc=pass\r\n\
            \r\n\
            Authentication-Results: mx.example.net; in the body\r\n";
        let out = stamp(
            raw,
            "Authentication-Results: mx.example.net; none\r\n",
            "mx.example.net",
        );
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "Authentication-Results: mx.example.net; none\r\n\
             Subject: hi\r\n\
             Authentication-Results: other.example.org; dmarc=pass\r\n\
             Authentication-Results: mx.example.net.evil.test; dmarc=pass\r\n\
             \r\n\
             Authentication-Results: mx.example.net; in the body\r\n"
        );
    }

    #[test]
    fn walks_the_dmarc_tree_as_mail_auth_does() {
        assert_eq!(
            dmarc_walk("Mail.Example.ORG"),
            [
                Box::from("_dmarc.mail.example.org."),
                Box::from("_dmarc.example.org."),
                Box::from("_dmarc.org."),
            ]
        );
        let deep = dmarc_walk("a.b.c.d.e.f.g.h.i.test");
        assert_eq!(deep.len(), 8, "at most eight queries: {deep:?}");
        assert_eq!(&*deep[1], "_dmarc.d.e.f.g.h.i.test.", "then seven labels");
        assert!(dmarc_walk("localhost").is_empty());
    }

    #[test]
    fn only_identities_that_could_align_hold_dmarc_open() {
        assert!(could_align("mail.example.org", "example.org"));
        assert!(could_align("example.org", "news.example.org"));
        assert!(could_align("a.example.org", "b.example.org"));
        assert!(!could_align("example.net", "example.org"));
        assert!(!could_align("slow.test", "fast.test"));
    }

    #[test]
    fn reads_the_authserv_id_past_comments_and_quotes() {
        assert_eq!(
            claimed_id(b" a.example; spf=pass").as_deref(),
            Some("a.example")
        );
        assert_eq!(
            claimed_id(b" (x) (y)\r\n\ta.example 1;").as_deref(),
            Some("a.example")
        );
        assert_eq!(claimed_id(b" \"a.example\";").as_deref(), Some("a.example"));
        assert_eq!(claimed_id(b" ;").as_deref(), None);
        assert_eq!(claimed_id(b" (unclosed").as_deref(), None);
    }
}
