//! dmarc-policy: enforces the DMARC policy the From domain publishes, from the gateway's own
//! sender authentication results (`[auth] verify` must include `"dmarc"`).
//!
//! At the data stage, a message that fails DMARC is refused with `550 5.7.1` when its domain's
//! policy is `reject`, held in quarantine when it is `quarantine`, and let through when it is
//! `none`. Config (`[plugin.config]`):
//! - `mode = "enforce"` (default) or `"report-only"`: report-only logs what it would have done
//!   and adds an `X-DMARC-Policy` header instead of refusing or holding;
//! - `exempt-domains = ["partner.example"]`: From domains (and their subdomains) never refused;
//! - `trusted-arc-sealers = ["lists.example"]`: forwarded mail that fails DMARC passes when its
//!   ARC chain validates and one of these domains sealed it (mailing lists and forwarders that
//!   break signatures but vouch for what they saw);
//! - `on-temperror = "accept"` (default) or `"tempfail"`: what to do when the DMARC record or
//!   the checks could not be looked up (`451 4.7.0`, the client tries again later).

use mailgate_sdk::auth::{self, DmarcPolicy, Outcome as Result};
use mailgate_sdk::prelude::*;

struct DmarcEnforcer;

impl Plugin for DmarcEnforcer {
    const NAME: &'static str = "dmarc-policy";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CONFIG: &'static [ConfigKey] = &[
        ConfigKey::new(
            "mode",
            ValueType::String,
            "enforce, or report-only (log and add X-DMARC-Policy instead of refusing)",
        )
        .default("\"enforce\""),
        ConfigKey::new(
            "exempt-domains",
            ValueType::StringList,
            "From domains (with their subdomains) whose policy is not enforced",
        )
        .default("[]"),
        ConfigKey::new(
            "trusted-arc-sealers",
            ValueType::StringList,
            "domains whose valid ARC seal lets forwarded mail failing DMARC through",
        )
        .default("[]"),
        ConfigKey::new(
            "on-temperror",
            ValueType::String,
            "accept, or tempfail (451 4.7.0) when DMARC could not be evaluated",
        )
        .default("\"accept\""),
    ];
}

/// True when `domain` is `parent` or under it.
fn within(domain: &str, parent: &str) -> bool {
    let (domain, parent) = (domain.to_ascii_lowercase(), parent.to_ascii_lowercase());
    domain == parent || domain.ends_with(&format!(".{parent}"))
}

fn exempt(domain: &str) -> bool {
    config::list("exempt-domains")
        .iter()
        .any(|d| within(domain, d))
}

/// A valid ARC chain sealed by a domain the operator trusts.
fn trusted_forwarder() -> Option<String> {
    let arc = auth::arc()?;
    if arc.outcome != Result::Pass {
        return None;
    }
    let trusted = config::list("trusted-arc-sealers");
    arc.sealers
        .into_iter()
        .find(|sealer| trusted.iter().any(|t| within(sealer, t)))
}

fn policy_name(policy: DmarcPolicy) -> &'static str {
    match policy {
        DmarcPolicy::None => "none",
        DmarcPolicy::Quarantine => "quarantine",
        DmarcPolicy::Reject => "reject",
    }
}

impl Data for DmarcEnforcer {
    fn data(_: &Session, _: &Envelope, _: &Message) -> Outcome {
        let Some(dmarc) = auth::dmarc() else {
            return Outcome::proceed();
        };
        let domain = dmarc.domain.clone();
        if dmarc.outcome == Result::Temperror {
            return match config::get_or("on-temperror", "accept").as_str() {
                "tempfail" => Outcome::tempfail(
                    451,
                    "4.7.0",
                    &format!("DMARC policy of {domain} could not be checked, try again later"),
                ),
                _ => Outcome::proceed(),
            };
        }
        let policy = match (dmarc.outcome, dmarc.policy) {
            (Result::Fail, Some(policy)) if policy != DmarcPolicy::None => policy,
            _ => return Outcome::proceed(),
        };
        if exempt(&domain) {
            log::info(&format!("DMARC fails for {domain}, exempt by config"));
            return Outcome::proceed();
        }
        if let Some(sealer) = trusted_forwarder() {
            log::info(&format!(
                "DMARC fails for {domain}, forwarded by trusted ARC sealer {sealer}"
            ));
            return Outcome::proceed();
        }
        let name = policy_name(policy);
        if config::get_or("mode", "enforce") == "report-only" {
            log::warn(&format!(
                "DMARC fails for {domain}: policy {name} not enforced (report-only)"
            ));
            return Outcome::proceed().add_header(
                "X-DMARC-Policy",
                &format!("fail; domain={domain}; policy={name}; action=none (report-only)"),
            );
        }
        match policy {
            DmarcPolicy::Reject => Outcome::reject(
                550,
                "5.7.1",
                &format!("Message rejected: {domain} publishes DMARC policy reject and this message fails DMARC"),
            ),
            _ => Outcome::quarantine(&format!("DMARC policy of {domain} is {name}")),
        }
    }
}

export_plugin!(DmarcEnforcer: Data);
