//! What a client asks of delivery status notifications (RFC 3461): RET and ENVID on MAIL,
//! NOTIFY and ORCPT on RCPT, checked as they come and kept with the queued message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::xtext;
use super::EsmtpParam;

/// The longest ENVID, decoded (RFC 3461 §4.4).
pub const MAX_ENVID: usize = 100;
/// The longest ORCPT address, decoded (RFC 3461 §4.2).
pub const MAX_ORCPT: usize = 500;

/// How much of the message a failure report returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    Full,
    Hdrs,
}

/// Which reports a recipient's sender wants; NEVER is all false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    #[serde(default, skip_serializing_if = "is_false")]
    pub success: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub failure: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub delay: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Notify {
    /// The parameter value as a client writes it.
    pub fn value(&self) -> String {
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.delay, "DELAY"),
            (self.failure, "FAILURE"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect();
        if words.is_empty() {
            "NEVER".into()
        } else {
            words.join(",")
        }
    }
}

/// The original recipient (ORCPT): its address type and the address, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orcpt {
    pub addr_type: String,
    pub address: String,
}

impl Orcpt {
    /// The parameter value as it goes on the wire (xtext, ASCII).
    pub fn value(&self) -> String {
        if self.addr_type.eq_ignore_ascii_case("utf-8") {
            format!("utf-8;{}", xtext::encode_utf8_addr(&self.address))
        } else {
            format!(
                "{};{}",
                self.addr_type,
                xtext::encode(self.address.as_bytes())
            )
        }
    }
}

/// One recipient's DSN parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptDsn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<Orcpt>,
}

impl RcptDsn {
    /// NOTIFY and ORCPT as RCPT parameters on the wire (none when not given).
    pub fn params(&self) -> Vec<EsmtpParam> {
        let notify = self.notify.map(|n| ("NOTIFY", n.value()));
        let orcpt = self.orcpt.as_ref().map(|o| ("ORCPT", o.value()));
        wire(notify.into_iter().chain(orcpt))
    }

    /// A failure report is wanted: NOTIFY absent (the default) or with FAILURE.
    pub fn wants_failure(&self) -> bool {
        self.notify.is_none_or(|n| n.failure)
    }

    /// A delay report is wanted: NOTIFY absent or with DELAY.
    pub fn wants_delay(&self) -> bool {
        self.notify.is_none_or(|n| n.delay)
    }

    /// A success report is wanted: only when NOTIFY says SUCCESS.
    pub fn wants_success(&self) -> bool {
        self.notify.is_some_and(|n| n.success)
    }
}

/// The DSN parameters of a whole transaction: MAIL's, and each recipient's by address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeDsn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recipients: BTreeMap<String, RcptDsn>,
}

impl EnvelopeDsn {
    /// RET and ENVID as MAIL parameters on the wire (none when not given).
    pub fn mail_params(&self) -> Vec<EsmtpParam> {
        let ret = self.ret.map(|r| match r {
            Ret::Full => ("RET", "FULL".to_string()),
            Ret::Hdrs => ("RET", "HDRS".to_string()),
        });
        let envid = (self.envid.as_ref()).map(|e| ("ENVID", xtext::encode(e.as_bytes())));
        wire(ret.into_iter().chain(envid))
    }

    /// Nothing asked: what a queue entry written before DSN support reads as.
    pub fn is_empty(&self) -> bool {
        *self == EnvelopeDsn::default()
    }

    /// What was asked, for people (`mailgate queue show`, `mailgate trace`): one line for
    /// the message (`ret=HDRS envid=abc`), one per recipient that gave parameters
    /// (`<a@x.test>: notify=SUCCESS,FAILURE orcpt=rfc822;b@x.test`); `-` for what was not given.
    pub fn describe(&self) -> Vec<String> {
        let ret = match self.ret {
            Some(Ret::Full) => "FULL",
            Some(Ret::Hdrs) => "HDRS",
            None => "-",
        };
        let envid = self.envid.as_deref().unwrap_or("-");
        let mut lines = vec![format!("ret={ret} envid={envid}")];
        for (rcpt, wanted) in &self.recipients {
            let notify = wanted.notify.map_or("-".into(), |n| n.value());
            let orcpt = wanted
                .orcpt
                .as_ref()
                .map_or("-".into(), |o| format!("{};{}", o.addr_type, o.address));
            lines.push(format!("<{rcpt}>: notify={notify} orcpt={orcpt}"));
        }
        lines
    }

    /// One recipient's parameters (defaults when it gave none, or a plugin added it).
    pub fn recipient(&self, address: &str) -> RcptDsn {
        self.recipients
            .get(address)
            .or_else(|| {
                self.recipients
                    .iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(address))
                    .map(|(_, d)| d)
            })
            .cloned()
            .unwrap_or_default()
    }
}

/// Parameters from names and wire values.
fn wire(pairs: impl Iterator<Item = (&'static str, String)>) -> Vec<EsmtpParam> {
    pairs
        .map(|(name, value)| EsmtpParam {
            name: name.into(),
            value: Some(value),
        })
        .collect()
}

/// The parameters as one string, each with its leading space (` RET=FULL ENVID=x`).
pub fn param_text(params: &[EsmtpParam]) -> String {
    params
        .iter()
        .map(|p| match &p.value {
            Some(v) => format!(" {}={v}", p.name),
            None => format!(" {}", p.name),
        })
        .collect()
}

/// A DSN parameter that cannot be taken; the text says why (`501 5.5.4`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DsnError(pub &'static str);

/// The DSN parameters' names on MAIL and RCPT.
pub fn is_dsn_param(name: &str) -> bool {
    ["RET", "ENVID", "NOTIFY", "ORCPT"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// A DSN parameter given with its value decoded (as JMAP's EmailSubmission envelope carries
/// it, RFC 8621 §7: xtext removed), written as it goes on the wire, so that the same parsers
/// ([`mail_params`], [`rcpt_params`]) check it. ENVID and ORCPT's address are xtext-encoded
/// again; RET and NOTIFY are keywords and go as given.
pub fn from_decoded(name: &str, value: Option<&str>) -> Result<EsmtpParam, DsnError> {
    if !is_dsn_param(name) {
        return Err(DsnError(
            "only the DSN parameters RET, ENVID, NOTIFY and ORCPT may be given",
        ));
    }
    let value = value.ok_or(DsnError("a DSN parameter needs a value"))?;
    let wire = if name.eq_ignore_ascii_case("ENVID") {
        xtext::encode(value.as_bytes())
    } else if name.eq_ignore_ascii_case("ORCPT") {
        let (addr_type, address) = value
            .split_once(';')
            .ok_or(DsnError("ORCPT must be addr-type;address"))?;
        let encoded = if addr_type.eq_ignore_ascii_case("utf-8") {
            xtext::encode_utf8_addr(address)
        } else {
            xtext::encode(address.as_bytes())
        };
        format!("{addr_type};{encoded}")
    } else {
        value.to_string()
    };
    Ok(EsmtpParam {
        name: name.to_ascii_uppercase(),
        value: Some(wire),
    })
}

/// The value of the one parameter named `name`, if given; an error when given twice.
fn single<'a>(
    params: &'a [EsmtpParam],
    name: &str,
    twice: &'static str,
) -> Result<Option<&'a EsmtpParam>, DsnError> {
    let mut found = params.iter().filter(|p| p.name.eq_ignore_ascii_case(name));
    let first = found.next();
    if found.next().is_some() {
        return Err(DsnError(twice));
    }
    Ok(first)
}

/// RET and ENVID of a MAIL command.
pub fn mail_params(params: &[EsmtpParam]) -> Result<(Option<Ret>, Option<String>), DsnError> {
    let ret = match single(params, "RET", "RET given more than once")? {
        None => None,
        Some(p) => match p.value.as_deref() {
            Some(v) if v.eq_ignore_ascii_case("FULL") => Some(Ret::Full),
            Some(v) if v.eq_ignore_ascii_case("HDRS") => Some(Ret::Hdrs),
            _ => return Err(DsnError("RET must be FULL or HDRS")),
        },
    };
    let envid = match single(params, "ENVID", "ENVID given more than once")? {
        None => None,
        Some(p) => {
            let value = p
                .value
                .as_deref()
                .filter(|v| !v.is_empty())
                .ok_or(DsnError("ENVID needs a value"))?;
            let envid =
                xtext::decode_text(value).map_err(|_| DsnError("ENVID is not valid xtext"))?;
            if envid.chars().count() > MAX_ENVID {
                return Err(DsnError("ENVID is longer than 100 characters"));
            }
            if envid.chars().any(|c| c.is_control()) {
                return Err(DsnError("ENVID has control characters"));
            }
            Some(envid)
        }
    };
    Ok((ret, envid))
}

/// NOTIFY and ORCPT of a RCPT command.
pub fn rcpt_params(params: &[EsmtpParam]) -> Result<RcptDsn, DsnError> {
    let notify = match single(params, "NOTIFY", "NOTIFY given more than once")? {
        None => None,
        Some(p) => Some(notify(p.value.as_deref().unwrap_or(""))?),
    };
    let orcpt = match single(params, "ORCPT", "ORCPT given more than once")? {
        None => None,
        Some(p) => Some(orcpt(p.value.as_deref().unwrap_or(""))?),
    };
    Ok(RcptDsn { notify, orcpt })
}

fn notify(value: &str) -> Result<Notify, DsnError> {
    const BAD: DsnError = DsnError("NOTIFY must be NEVER, or a list of SUCCESS, DELAY, FAILURE");
    if value.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify::default());
    }
    let mut notify = Notify::default();
    for word in value.split(',') {
        let flag = if word.eq_ignore_ascii_case("SUCCESS") {
            &mut notify.success
        } else if word.eq_ignore_ascii_case("DELAY") {
            &mut notify.delay
        } else if word.eq_ignore_ascii_case("FAILURE") {
            &mut notify.failure
        } else if word.eq_ignore_ascii_case("NEVER") {
            return Err(DsnError(
                "NOTIFY=NEVER cannot be combined with other values",
            ));
        } else {
            return Err(BAD);
        };
        if *flag {
            return Err(DsnError("NOTIFY names a value twice"));
        }
        *flag = true;
    }
    Ok(notify)
}

fn orcpt(value: &str) -> Result<Orcpt, DsnError> {
    let (addr_type, encoded) = value
        .split_once(';')
        .ok_or(DsnError("ORCPT must be addr-type;address"))?;
    let address = if addr_type.eq_ignore_ascii_case("rfc822") {
        xtext::decode_text(encoded).map_err(|_| DsnError("ORCPT address is not valid xtext"))?
    } else if addr_type.eq_ignore_ascii_case("utf-8") {
        xtext::decode_utf8_addr(encoded)
            .map_err(|_| DsnError("ORCPT address is not valid utf-8-addr-xtext"))?
    } else {
        return Err(DsnError("ORCPT address type must be rfc822 or utf-8"));
    };
    if address.is_empty() {
        return Err(DsnError("ORCPT address is empty"));
    }
    if address.chars().count() > MAX_ORCPT {
        return Err(DsnError("ORCPT address is longer than 500 characters"));
    }
    if address.chars().any(|c| c.is_control()) {
        return Err(DsnError("ORCPT address has control characters"));
    }
    Ok(Orcpt {
        addr_type: addr_type.to_ascii_lowercase(),
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<EsmtpParam> {
        list.iter()
            .map(|(n, v)| EsmtpParam {
                name: n.to_string(),
                value: Some(v.to_string()),
            })
            .collect()
    }

    #[test]
    fn mail_parameters_are_read_and_checked() {
        let ok = mail_params(&params(&[("RET", "hdrs"), ("ENVID", "QQ+2B1")]));
        assert_eq!(ok, Ok((Some(Ret::Hdrs), Some("QQ+1".into()))));
        assert!(mail_params(&params(&[("RET", "ALL")])).is_err());
        assert!(mail_params(&params(&[("RET", "FULL"), ("RET", "HDRS")])).is_err());
        assert!(mail_params(&params(&[("ENVID", &"x".repeat(101))])).is_err());
        assert!(mail_params(&params(&[("ENVID", &"x".repeat(100))])).is_ok());
        assert!(mail_params(&params(&[("ENVID", "a+0Ab")])).is_err());
    }

    #[test]
    fn rcpt_parameters_are_read_and_checked() {
        let dsn = rcpt_params(&params(&[
            ("NOTIFY", "SUCCESS,FAILURE"),
            ("ORCPT", "rfc822;a+2Bb@x.test"),
        ]))
        .expect("valid");
        assert!(dsn.wants_success() && dsn.wants_failure() && !dsn.wants_delay());
        let orcpt = dsn.orcpt.expect("orcpt");
        assert_eq!(orcpt.address, "a+b@x.test");
        assert_eq!(orcpt.value(), "rfc822;a+2Bb@x.test");
        let never = rcpt_params(&params(&[("NOTIFY", "NEVER")])).expect("valid");
        assert!(!never.wants_failure() && !never.wants_delay());
        assert_eq!(never.notify.map(|n| n.value()).as_deref(), Some("NEVER"));
        assert!(RcptDsn::default().wants_failure() && RcptDsn::default().wants_delay());
        for bad in ["NEVER,SUCCESS", "SUCCESS,SUCCESS", "SOMETIMES", ""] {
            assert!(rcpt_params(&params(&[("NOTIFY", bad)])).is_err(), "{bad}");
        }
        for bad in ["a@x.test", "x400;a", "rfc822;", "rfc822;a=b"] {
            assert!(rcpt_params(&params(&[("ORCPT", bad)])).is_err(), "{bad}");
        }
        let utf8 = rcpt_params(&params(&[("ORCPT", "utf-8;j\\x{F6}@x.test")])).expect("valid");
        assert_eq!(utf8.orcpt.map(|o| o.address).as_deref(), Some("jö@x.test"));
        let long = format!("rfc822;{}@x.test", "a".repeat(500));
        assert!(rcpt_params(&params(&[("ORCPT", &long)])).is_err());
    }

    #[test]
    fn decoded_values_go_through_the_same_checks() {
        let envid = from_decoded("envid", Some("env 42+")).expect("valid");
        assert_eq!(envid.value.as_deref(), Some("env+2042+2B"));
        let (_, read) = mail_params(&[envid]).expect("valid");
        assert_eq!(read.as_deref(), Some("env 42+"));
        let orcpt = from_decoded("ORCPT", Some("rfc822;a+b=c@x.test")).expect("valid");
        let read = rcpt_params(&[orcpt]).expect("valid").orcpt.expect("orcpt");
        assert_eq!(read.address, "a+b=c@x.test");
        let orcpt = from_decoded("ORCPT", Some("utf-8;jö@x.test")).expect("valid");
        let read = rcpt_params(&[orcpt]).expect("valid").orcpt.expect("orcpt");
        assert_eq!(read.address, "jö@x.test");
        assert!(from_decoded("SIZE", Some("10")).is_err());
        assert!(from_decoded("RET", None).is_err());
        assert!(from_decoded("ORCPT", Some("no-type")).is_err());
        let notify = from_decoded("NOTIFY", Some("SOMETIMES")).expect("written");
        assert!(rcpt_params(&[notify]).is_err());
    }

    #[test]
    fn an_old_envelope_reads_as_defaults() {
        let dsn: EnvelopeDsn = serde_json::from_str("{}").expect("parses");
        assert!(dsn.is_empty());
        assert!(dsn.recipient("a@x.test").wants_failure());
    }
}
