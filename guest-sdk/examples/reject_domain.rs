// A complete plugin: refuse every recipient at one domain (the SDK's doc example).
use mailgate_sdk::prelude::*;

struct NoExampleCom;

impl Plugin for NoExampleCom {
    const NAME: &'static str = "no-example-com";
}

impl RcptTo for NoExampleCom {
    fn rcpt_to(_: &Session, _: &Envelope, rcpt: &str, _: &[EsmtpParam]) -> Outcome {
        if domain_of(rcpt).eq_ignore_ascii_case("example.com") {
            return Outcome::reject(550, "5.1.1", "No mail for example.com here");
        }
        Outcome::proceed()
    }
}

export_plugin!(NoExampleCom: RcptTo);
