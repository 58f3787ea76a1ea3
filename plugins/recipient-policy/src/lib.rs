//! recipient-policy: which recipients and senders a gateway takes mail for.
//!
//! Config (`[plugin.config]`):
//! - `domains = ["example.org"]`: recipient domains accepted (others get 550 5.1.1);
//! - `addresses = ["postmaster@example.net"]`: single addresses accepted besides those domains;
//! - `reject-senders = ["spam@example.com", "@bad.example"]`: senders refused with 550 5.7.1
//!   (an entry starting with `@` matches a whole domain);
//! - `max-recipients = 100`: recipients per message; more get 452 4.5.3;
//! - `allow-authenticated = true`: authenticated clients may send to any domain (submission).

use mailgate_sdk::prelude::*;

struct RecipientPolicy;

fn matches_sender(sender: &str, rule: &str) -> bool {
    match rule.strip_prefix('@') {
        Some(domain) => domain_of(sender).eq_ignore_ascii_case(domain),
        None => sender.eq_ignore_ascii_case(rule),
    }
}

fn recipient_allowed(recipient: &str) -> bool {
    let domain = domain_of(recipient);
    config::list("domains")
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
        || config::list("addresses")
            .iter()
            .any(|a| a.eq_ignore_ascii_case(recipient))
}

impl Plugin for RecipientPolicy {
    const NAME: &'static str = "recipient-policy";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CONFIG: &'static [ConfigKey] = &[
        ConfigKey::new(
            "domains",
            ValueType::StringList,
            "recipient domains accepted (others get 550 5.1.1)",
        )
        .default("[]"),
        ConfigKey::new(
            "addresses",
            ValueType::StringList,
            "single recipient addresses accepted besides those domains",
        )
        .default("[]"),
        ConfigKey::new(
            "reject-senders",
            ValueType::StringList,
            "senders refused with 550 5.7.1 (`@domain` matches a whole domain)",
        )
        .default("[]"),
        ConfigKey::new(
            "max-recipients",
            ValueType::Integer,
            "recipients per message; more get 452 4.5.3",
        )
        .default("100"),
        ConfigKey::new(
            "allow-authenticated",
            ValueType::Boolean,
            "authenticated clients may send to any domain (submission)",
        )
        .default("true"),
    ];
}

impl MailFrom for RecipientPolicy {
    fn mail_from(_: &Session, sender: &str, _: &[EsmtpParam]) -> Outcome {
        if config::list("reject-senders")
            .iter()
            .any(|rule| matches_sender(sender, rule))
        {
            return Outcome::reject(550, "5.7.1", "Sender address rejected by policy");
        }
        Outcome::proceed()
    }
}

impl RcptTo for RecipientPolicy {
    fn rcpt_to(
        session: &Session,
        envelope: &Envelope,
        recipient: &str,
        _: &[EsmtpParam],
    ) -> Outcome {
        let max = config::parse_or("max-recipients", 100usize);
        if envelope.recipients.len() >= max {
            return Outcome::tempfail(452, "4.5.3", "Too many recipients");
        }
        let authenticated =
            session.auth_user.is_some() && config::parse_or("allow-authenticated", true);
        if authenticated || recipient_allowed(recipient) {
            return Outcome::proceed();
        }
        Outcome::reject(
            550,
            "5.1.1",
            "Recipient address rejected: not a local or accepted domain",
        )
    }
}

export_plugin!(RecipientPolicy: MailFrom, RcptTo);
