//! {{name}}: refuses recipients at the domains listed in `blocked-domains` and stamps every
//! accepted message with `X-Checked-By: {{name}}`.
//!
//! Build: `mailgate plugin build` (the component lands in target/{{output}}.wasm);
//! test: `mailgate test cases`.
use mailgate_sdk::prelude::*;

struct Policy;

impl Plugin for Policy {
    const NAME: &'static str = "{{name}}";
    const CONFIG: &'static [ConfigKey] = &[ConfigKey::new(
        "blocked-domains",
        ValueType::StringList,
        "domains whose recipients are refused",
    )
    .default("[]")];
}

impl RcptTo for Policy {
    fn rcpt_to(_: &Session, _: &Envelope, rcpt: &str, _: &[EsmtpParam]) -> Outcome {
        let domain = domain_of(rcpt);
        let blocked = config::list("blocked-domains");
        if blocked.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Outcome::reject(550, "5.7.1", &format!("No mail for {domain} here"));
        }
        Outcome::proceed()
    }
}

impl Data for Policy {
    fn data(_: &Session, _: &Envelope, _: &Message) -> Outcome {
        Outcome::proceed().add_header("X-Checked-By", "{{name}}")
    }
}

export_plugin!(Policy: RcptTo, Data);
