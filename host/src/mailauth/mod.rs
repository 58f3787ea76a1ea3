//! Sender authentication of received mail: SPF (RFC 7208) for the MAIL FROM and HELO
//! identities, DKIM (RFC 6376) for every signature, DMARC (RFC 9989) with alignment and the
//! organisational domain found by its DNS tree walk, and ARC (RFC 8617) chain validation.
//!
//! The checks are `mail-auth`'s, run through the gateway's resolver and a bounded cache of
//! parsed answers. Only the methods the config names run (DMARC brings SPF and DKIM with it,
//! without reporting them); SPF starts at MAIL FROM, the rest once the message is in. Each step
//! has a deadline past which its unfinished methods say `temperror`.

mod cache;
pub mod key;
pub mod results;
mod seal;

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, MessageAuthenticator, SpfOutput, SpfResult,
};

use crate::config::{AuthMethod, Config};
use crate::message::header::HeaderBlock;
use cache::Caches;
pub use results::{
    ArcCheck, AuthResults, DkimCheck, DmarcCheck, DmarcPolicy, Outcome, SpfCheck, SpfIdentity,
};
pub use seal::{SealInput, Sealer};

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

/// The SPF verdicts of one transaction, kept until the message is in.
#[derive(Debug, Clone)]
pub struct SpfOutcome {
    helo: SpfOutput,
    mail_from: SpfOutput,
    /// Why both are `temperror`, when the deadline passed.
    reason: Option<String>,
}

pub struct Verifier {
    authenticator: MessageAuthenticator,
    caches: Caches,
    methods: Vec<AuthMethod>,
    /// Lives as long as the process (the ARC results a seal carries borrow it).
    authserv_id: &'static str,
    hostname: String,
    timeout: Duration,
    sealer: Option<Sealer>,
}

/// A message after the checks: its bytes (unchanged), the results, and what an ARC seal of it
/// needs, when the gateway seals.
pub struct Checked {
    pub message: Vec<u8>,
    pub results: AuthResults,
    pub seal: Option<SealInput>,
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
            timeout: Duration::from_millis(auth.timeout_ms.max(1)),
            sealer,
        }))
    }

    pub fn authserv_id(&self) -> &str {
        self.authserv_id
    }

    /// `raw` with the gateway's ARC set on top; unchanged (and the reason logged) when it
    /// cannot be sealed.
    pub fn seal(&self, raw: Vec<u8>, input: &SealInput) -> Vec<u8> {
        let Some(sealer) = &self.sealer else {
            return raw;
        };
        match crate::blocking::run(|| sealer.seal(&raw, input)) {
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

    /// Evaluates SPF for the HELO name and the MAIL FROM identity, side by side.
    pub async fn spf(&self, envelope: &Envelope) -> SpfOutcome {
        let identity = envelope.mail_from_identity();
        let work = async {
            tokio::join!(
                self.spf_helo(envelope),
                self.authenticator
                    .verify_spf(self.caches.attach(SpfParameters::verify_mail_from(
                        envelope.client_ip,
                        &envelope.helo,
                        &self.hostname,
                        &identity,
                    )))
            )
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok((helo, mail_from)) => SpfOutcome {
                helo,
                mail_from,
                reason: None,
            },
            Err(_) => SpfOutcome {
                helo: temperror_spf(&envelope.helo),
                mail_from: temperror_spf(domain_of(&identity)),
                reason: Some("DNS answers did not come in time".into()),
            },
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

    /// DKIM, ARC and DMARC on the message as the client sent it, with the SPF verdicts from
    /// MAIL FROM (none when SPF is not configured). Reading the message (its body hashes) is
    /// CPU work and leaves the runtime's worker for the time; waiting for DNS does not hold a
    /// thread.
    pub async fn check_message(
        &self,
        message: Vec<u8>,
        envelope: Envelope,
        spf: Option<SpfOutcome>,
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
        spf: Option<SpfOutcome>,
    ) -> (AuthResults, Option<SealInput>) {
        let spf = match spf {
            Some(spf) => Some(spf),
            None if self.checks_spf() => Some(self.spf(envelope).await),
            None => None,
        };
        let work = async {
            let message = crate::blocking::run(|| AuthenticatedMessage::parse(raw))?;
            let dkim = if self.runs(AuthMethod::Dkim) || self.runs(AuthMethod::Dmarc) {
                self.authenticator
                    .verify_dkim(self.caches.attach(&message))
                    .await
            } else {
                Vec::new()
            };
            let arc = match self.runs(AuthMethod::Arc) {
                true => Some(
                    self.authenticator
                        .verify_arc(self.caches.attach(&message))
                        .await,
                ),
                false => None,
            };
            let dmarc = match (&spf, self.runs(AuthMethod::Dmarc)) {
                (Some(spf), true) => {
                    let mail_from = envelope.mail_from_identity();
                    let output = self
                        .authenticator
                        .verify_dmarc(self.caches.attach(DmarcParameters::new(
                            &message,
                            &dkim,
                            domain_of(&mail_from),
                            &spf.mail_from,
                        )))
                        .await;
                    Some(output)
                }
                _ => None,
            };
            let seal = self.sealer.as_ref().and(arc.as_ref()).map(|arc| SealInput {
                results: self.arc_results(envelope, spf.as_ref(), &dkim, dmarc.as_ref(), arc),
                chain: arc.result().clone(),
            });
            let checks = (
                self.runs(AuthMethod::Dkim).then(|| {
                    unreadable_signatures(&message)
                        .chain(dkim.iter().map(dkim_check))
                        .collect()
                }),
                dmarc.as_ref().map(dmarc_check),
                arc.as_ref().map(arc_check),
            );
            Some((checks, seal))
        };
        let ((dkim, dmarc, arc), seal) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Some(done)) => done,
            Ok(None) => {
                let results = self.unfinished(envelope, spf.as_ref(), "unreadable message");
                return (results, None);
            }
            Err(_) => {
                let why = "DNS answers did not come in time";
                return (self.unfinished(envelope, spf.as_ref(), why), None);
            }
        };
        let results = AuthResults {
            authserv_id: self.authserv_id.to_string(),
            client_ip: envelope.client_ip,
            spf: self.spf_checks(envelope, spf.as_ref()),
            dkim,
            dmarc,
            arc,
        };
        (results, seal)
    }

    /// The ARC-Authentication-Results of the gateway's seal, in mail-auth's own form.
    fn arc_results(
        &self,
        envelope: &Envelope,
        spf: Option<&SpfOutcome>,
        dkim: &[DkimOutput<'_>],
        dmarc: Option<&DmarcOutput>,
        arc: &ArcOutput<'_>,
    ) -> AuthenticationResults<'static> {
        let mut results = AuthenticationResults::new(self.authserv_id);
        if let Some(spf) = spf {
            results = results
                .with_spf_mailfrom_result(
                    &spf.mail_from,
                    envelope.client_ip,
                    &envelope.sender,
                    &envelope.helo,
                )
                .with_spf_ehlo_result(&spf.helo, envelope.client_ip, &envelope.helo);
        }
        let from = dmarc.map(|d| d.domain()).unwrap_or_default();
        results = results.with_dkim_results(dkim, from);
        if let Some(dmarc) = dmarc {
            results = results.with_dmarc_result(dmarc);
        }
        results.with_arc_result(arc, envelope.client_ip)
    }

    /// Results when the message checks could not finish: `temperror` (or `permerror` for a
    /// message that cannot be read) for each configured method.
    fn unfinished(&self, envelope: &Envelope, spf: Option<&SpfOutcome>, why: &str) -> AuthResults {
        let outcome = match why {
            "unreadable message" => Outcome::Permerror,
            _ => Outcome::Temperror,
        };
        let failed = |domain: &str| DkimCheck {
            outcome,
            domain: domain.to_string(),
            selector: String::new(),
            algorithm: String::new(),
            signature_prefix: String::new(),
            reason: Some(why.to_string()),
        };
        AuthResults {
            authserv_id: self.authserv_id.to_string(),
            client_ip: envelope.client_ip,
            spf: self.spf_checks(envelope, spf),
            dkim: self.runs(AuthMethod::Dkim).then(|| vec![failed("")]),
            dmarc: self.runs(AuthMethod::Dmarc).then(|| DmarcCheck {
                outcome,
                domain: String::new(),
                policy: None,
                spf_aligned: false,
                dkim_aligned: false,
                reason: Some(why.to_string()),
            }),
            arc: self.runs(AuthMethod::Arc).then(|| ArcCheck {
                outcome,
                sealers: Vec::new(),
                reason: Some(why.to_string()),
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
                &spf.reason,
            ),
            spf_check(SpfIdentity::Helo, &spf.helo, &envelope.helo, &spf.reason),
        ]
    }

    /// Parsed TXT records in the cache now (benchmarks, tests).
    pub fn cached_records(&self) -> usize {
        self.caches.txt_entries()
    }
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

fn dmarc_check(output: &DmarcOutput) -> DmarcCheck {
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
