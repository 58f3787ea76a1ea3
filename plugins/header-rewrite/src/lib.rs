//! header-rewrite: header rules and sender masquerading.
//!
//! Config (`[plugin.config]`):
//! - `remove = ["X-Originating-IP"]`: headers dropped;
//! - `add = ["X-Scanned: yes"]`: headers appended (`Name: value`);
//! - `rename = ["X-Old=X-New"]`: every `X-Old` field becomes `X-New` with the same value;
//! - `masquerade-domains = ["host1.example.org"]` with `masquerade-as = "example.org"`: the
//!   envelope sender and the `From:` address in those domains are rewritten to the other domain;
//! - `trace-header = "X-Mailgate"` with `gateway-name = "mailgate"`: a trace header naming the
//!   gateway and the session.

use mailgate_sdk::prelude::*;

struct HeaderRewrite;

/// The masquerade target if `domain` is one of the masqueraded domains.
fn masquerade(domain: &str) -> Option<String> {
    let target = config::get("masquerade-as")?;
    config::list("masquerade-domains")
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
        .then_some(target)
}

/// Rewrites the domain of every address inside angle brackets (or a bare address) in a From value.
fn masquerade_from(value: &str) -> Option<String> {
    let unfolded = value.replace("\r\n", "");
    let (start, end) = match (unfolded.rfind('<'), unfolded.rfind('>')) {
        (Some(s), Some(e)) if s < e => (s + 1, e),
        _ => (0, unfolded.len()),
    };
    let address = unfolded[start..end].trim();
    let (local, domain) = address.rsplit_once('@')?;
    let target = masquerade(domain)?;
    Some(
        format!("{}{local}@{target}{}", &unfolded[..start], &unfolded[end..])
            .trim()
            .to_string(),
    )
}

impl Plugin for HeaderRewrite {
    const NAME: &'static str = "header-rewrite";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CONFIG: &'static [ConfigKey] = &[
        ConfigKey::new("remove", ValueType::StringList, "header fields dropped").default("[]"),
        ConfigKey::new(
            "add",
            ValueType::StringList,
            "header fields appended, as `Name: value`",
        )
        .default("[]"),
        ConfigKey::new(
            "rename",
            ValueType::StringList,
            "`Old=New`: every Old field becomes New with the same value",
        )
        .default("[]"),
        ConfigKey::new(
            "masquerade-domains",
            ValueType::StringList,
            "sender domains rewritten to masquerade-as (envelope and From)",
        )
        .default("[]"),
        ConfigKey::new(
            "masquerade-as",
            ValueType::String,
            "the domain masqueraded senders get",
        ),
        ConfigKey::new(
            "trace-header",
            ValueType::String,
            "a header naming the gateway and the session, added to every message",
        ),
        ConfigKey::new(
            "gateway-name",
            ValueType::String,
            "the gateway's name in the trace header",
        )
        .default("\"mailgate\""),
    ];
}

impl MailFrom for HeaderRewrite {
    fn mail_from(_: &Session, sender: &str, _: &[EsmtpParam]) -> Outcome {
        match sender
            .rsplit_once('@')
            .and_then(|(local, d)| Some((local, masquerade(d)?)))
        {
            Some((local, target)) => Outcome::proceed().change_sender(&format!("{local}@{target}")),
            None => Outcome::proceed(),
        }
    }
}

impl Data for HeaderRewrite {
    fn data(session: &Session, _: &Envelope, message: &Message) -> Outcome {
        let mut outcome = Outcome::proceed();
        for name in config::list("remove") {
            if !message.header(&name).is_empty() {
                outcome = outcome.remove_header(&name);
            }
        }
        for rule in config::list("rename") {
            let Some((from, to)) = rule.split_once('=') else {
                continue;
            };
            let fields = message.header(from.trim());
            if fields.is_empty() {
                continue;
            }
            outcome = outcome.remove_header(from.trim());
            for field in fields {
                outcome = outcome.add_header(to.trim(), field.raw.replace("\r\n", "").trim());
            }
        }
        for line in config::list("add") {
            if let Some((name, value)) = line.split_once(':') {
                outcome = outcome.add_header(name.trim(), value.trim());
            }
        }
        if let Some(from) = message
            .header("From")
            .first()
            .and_then(|f| masquerade_from(&f.raw))
        {
            outcome = outcome.set_header("From", &from);
        }
        if let Some(trace) = config::get("trace-header") {
            let gateway = config::get_or("gateway-name", "mailgate");
            let value = format!(
                "processed by {gateway}; session={}; tls={}",
                session.id, session.tls
            );
            outcome = outcome.add_header(&trace, &value);
        }
        outcome
    }
}

export_plugin!(HeaderRewrite: MailFrom, Data);
