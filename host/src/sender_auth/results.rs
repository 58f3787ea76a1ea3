//! What the checks found, as plain owned values: kept with the transaction for plugins and the
//! journal, and written as the `Authentication-Results` field (RFC 8601).

use std::fmt::Write;
use std::net::IpAddr;

use serde::Serialize;

/// A method's result, with the names RFC 8601 and RFC 7208 give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    None,
    Pass,
    Fail,
    Softfail,
    Neutral,
    Temperror,
    Permerror,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::None => "none",
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Softfail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::Temperror => "temperror",
            Outcome::Permerror => "permerror",
        }
    }
}

/// Which identity an SPF check was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpfIdentity {
    /// The MAIL FROM address (`postmaster@` the HELO name for the null sender).
    MailFrom,
    Helo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpfCheck {
    pub identity: SpfIdentity,
    pub outcome: Outcome,
    /// The domain whose record was evaluated.
    pub domain: String,
    /// The identity as checked: the address, or the HELO name.
    pub subject: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DkimCheck {
    pub outcome: Outcome,
    /// `d=` and `s=` of the signature (empty when it could not be read).
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    /// The first characters of `b=`, to tell signatures apart (RFC 6008).
    pub signature_prefix: String,
    pub reason: Option<String>,
}

/// The policy a DMARC record asks for, as applied to this message's From domain (`p`, or `sp`
/// and `np` for subdomains, one step milder in test mode `t=y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn name(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmarcCheck {
    pub outcome: Outcome,
    /// The RFC 5322 From domain.
    pub domain: String,
    /// The record's policy for that domain; none when there is no record.
    pub policy: Option<DmarcPolicy>,
    pub spf_aligned: bool,
    pub dkim_aligned: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArcCheck {
    pub outcome: Outcome,
    /// The `d=` of each ARC-Seal, instance 1 first.
    pub sealers: Vec<String>,
    pub reason: Option<String>,
}

/// Everything verified for one message; a method not configured is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthResults {
    pub authserv_id: String,
    pub client_ip: IpAddr,
    pub spf: Vec<SpfCheck>,
    pub dkim: Option<Vec<DkimCheck>>,
    pub dmarc: Option<DmarcCheck>,
    pub arc: Option<ArcCheck>,
}

impl AuthResults {
    /// The SPF check of the MAIL FROM identity, the one DMARC uses.
    pub fn spf_mail_from(&self) -> Option<&SpfCheck> {
        self.spf
            .iter()
            .find(|c| c.identity == SpfIdentity::MailFrom)
    }

    /// The field's value on one line, for logs and the journal.
    pub fn summary(&self) -> String {
        let field = self.header_field();
        let value = field
            .strip_prefix("Authentication-Results: ")
            .unwrap_or(&field);
        value.trim_end().replace("\r\n\t", " ")
    }

    /// The results as the ARC-Authentication-Results of the gateway's seal carries them, past
    /// its `i=` tag (RFC 8617 §4.1.1): the same text as the `Authentication-Results` field,
    /// whose property values are quoted where RFC 8601 wants them quoted (a `header.b` with
    /// `/`), on one line with each run of white space one space — the seal signs the field in
    /// relaxed form, and unfolded the field is byte for byte what is signed — and within
    /// [`MAX_SEALED_RESULTS`] bytes (the last DKIM results are left out of a longer one).
    pub fn sealed_value(&self) -> String {
        let mut results = self.clone();
        loop {
            let line = results
                .summary()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let Some(dkim) = results.dkim.as_mut().filter(|d| d.len() > 1) else {
                return line;
            };
            if line.len() <= MAX_SEALED_RESULTS {
                return line;
            }
            dkim.pop();
        }
    }

    /// The `Authentication-Results` field, name and CRLF included.
    pub fn header_field(&self) -> String {
        let mut field = format!("Authentication-Results: {}", self.authserv_id);
        let before = field.len();
        for check in &self.spf {
            let property = match check.identity {
                SpfIdentity::MailFrom => "smtp.mailfrom",
                SpfIdentity::Helo => "smtp.helo",
            };
            let _ = write!(
                field,
                ";\r\n\tspf={}{} {property}={}",
                check.outcome.name(),
                reason(&check.reason),
                pvalue(&check.subject)
            );
        }
        if let Some(dkim) = &self.dkim {
            if dkim.is_empty() {
                field.push_str(";\r\n\tdkim=none");
            }
            for check in dkim {
                let _ = write!(
                    field,
                    ";\r\n\tdkim={}{}",
                    check.outcome.name(),
                    reason(&check.reason)
                );
                if !check.domain.is_empty() {
                    let _ = write!(
                        field,
                        " header.d={} header.s={} header.a={} header.b={}",
                        pvalue(&check.domain),
                        pvalue(&check.selector),
                        pvalue(&check.algorithm),
                        pvalue(&check.signature_prefix)
                    );
                }
            }
        }
        if let Some(dmarc) = &self.dmarc {
            let _ = write!(
                field,
                ";\r\n\tdmarc={}{}",
                dmarc.outcome.name(),
                reason(&dmarc.reason)
            );
            // No From domain (an unreadable message): no property, rather than an empty one.
            if !dmarc.domain.is_empty() {
                let _ = write!(field, " header.from={}", pvalue(&dmarc.domain));
            }
            if let Some(policy) = dmarc.policy {
                let _ = write!(field, " policy.dmarc={}", policy.name());
            }
        }
        if let Some(arc) = &self.arc {
            let _ = write!(
                field,
                ";\r\n\tarc={}{} smtp.remote-ip={}",
                arc.outcome.name(),
                reason(&arc.reason),
                self.client_ip
            );
        }
        if field.len() == before {
            field.push_str("; none");
        }
        field.push_str("\r\n");
        field
    }
}

/// Longest ARC-Authentication-Results value the seal writes: with its field name and `i=`
/// tag, within the 998-byte line of RFC 5322 §2.1.1.
pub const MAX_SEALED_RESULTS: usize = 900;

/// ` reason="..."` when there is one, quoted for a header (RFC 8601 §2.2).
fn reason(reason: &Option<String>) -> String {
    match reason {
        Some(text) => {
            let clean: String = text
                .chars()
                .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
                .take(120)
                .collect();
            format!(" reason=\"{clean}\"")
        }
        None => String::new(),
    }
}

/// A property value (RFC 8601 §2.2 `pvalue`): as it is when it is a token (RFC 2045) or an
/// address of a dot-atom local part and a domain name, quoted otherwise (a `header.b` with `/`
/// or `=`, say), never with anything that could end the field or start another.
fn pvalue(value: &str) -> String {
    if is_token(value) || is_address(value) {
        value.to_string()
    } else {
        let clean: String = value
            .chars()
            .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
            .take(256)
            .collect();
        format!("\"{clean}\"")
    }
}

/// An RFC 2045 token: printable ASCII but space and the tspecials.
fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// `local-part "@" domain-name`, the local part a dot-atom (RFC 5322 atext and dots).
fn is_address(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b);
    let domain_char = |b: u8| b.is_ascii_alphanumeric() || b"-.".contains(&b);
    !local.is_empty()
        && !domain.is_empty()
        && local.bytes().all(atext)
        && domain.bytes().all(domain_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> AuthResults {
        AuthResults {
            authserv_id: "mx.example.net".into(),
            client_ip: "192.0.2.1".parse().expect("ip"),
            spf: vec![SpfCheck {
                identity: SpfIdentity::MailFrom,
                outcome: Outcome::Softfail,
                domain: "example.org".into(),
                subject: "a@example.org".into(),
                reason: None,
            }],
            dkim: Some(vec![DkimCheck {
                outcome: Outcome::Fail,
                domain: "example.org".into(),
                selector: "s1".into(),
                algorithm: "rsa-sha256".into(),
                signature_prefix: "AbCd+/12".into(),
                reason: Some("body hash \"did not\"\r\nmatch".into()),
            }]),
            dmarc: Some(DmarcCheck {
                outcome: Outcome::Fail,
                domain: "example.org".into(),
                policy: Some(DmarcPolicy::Reject),
                spf_aligned: false,
                dkim_aligned: false,
                reason: None,
            }),
            arc: None,
        }
    }

    #[test]
    fn writes_one_field_with_every_method() {
        assert_eq!(
            results().header_field(),
            "Authentication-Results: mx.example.net;\r\n\
             \tspf=softfail smtp.mailfrom=a@example.org;\r\n\
             \tdkim=fail reason=\"body hash did notmatch\" header.d=example.org header.s=s1 \
             header.a=rsa-sha256 header.b=\"AbCd+/12\";\r\n\
             \tdmarc=fail header.from=example.org policy.dmarc=reject\r\n"
        );
    }

    #[test]
    fn quotes_what_is_not_a_plain_value() {
        let mut r = results();
        r.spf[0].subject = "\"odd local\"@example.org;\r\nX-Evil: 1".into();
        let field = r.header_field();
        assert!(
            field.contains("smtp.mailfrom=\"odd local@example.org;X-Evil: 1\""),
            "{field}"
        );
        assert_eq!(
            field.matches("\r\n").count(),
            4,
            "no line of its own: {field}"
        );
    }

    #[test]
    fn property_values_are_tokens_addresses_or_quoted() {
        assert_eq!(pvalue("example.org"), "example.org");
        assert_eq!(
            pvalue("bounce+a=b/c@example.org"),
            "bounce+a=b/c@example.org"
        );
        assert_eq!(pvalue("AbCd+/12"), "\"AbCd+/12\"");
        assert_eq!(pvalue("AbCd=="), "\"AbCd==\"");
        assert_eq!(pvalue(""), "\"\"");
        let mut r = results();
        if let Some(dmarc) = r.dmarc.as_mut() {
            dmarc.domain.clear();
        }
        assert!(r
            .header_field()
            .contains("\tdmarc=fail policy.dmarc=reject\r\n"));
    }

    #[test]
    fn says_none_when_nothing_was_checked() {
        let r = AuthResults {
            spf: Vec::new(),
            dkim: None,
            dmarc: None,
            ..results()
        };
        assert_eq!(
            r.header_field(),
            "Authentication-Results: mx.example.net; none\r\n"
        );
    }
}
