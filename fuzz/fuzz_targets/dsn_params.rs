//! DSN parameters (RFC 3461) as MAIL and RCPT carry them: xtext and utf-8-addr-xtext decode
//! without panicking, encoding round-trips, and the parameter checks hold their bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::mail::dsn;
use mailgate::mail::xtext;
use mailgate::mail::EsmtpParam;

fuzz_target!(|data: &[u8]| {
    assert_eq!(xtext::decode(&xtext::encode(data)).as_deref(), Ok(data));
    let text = String::from_utf8_lossy(data);
    if let Ok(decoded) = xtext::decode(&text) {
        assert!(decoded.len() <= text.len());
        assert_eq!(xtext::decode(&xtext::encode(&decoded)), Ok(decoded));
    }
    if let Ok(address) = xtext::decode_utf8_addr(&text) {
        assert_eq!(
            xtext::decode_utf8_addr(&xtext::encode_utf8_addr(&address)),
            Ok(address)
        );
    }
    let param = |name: &str| EsmtpParam {
        name: name.into(),
        value: Some(text.to_string()),
    };
    if let Ok((_, Some(envid))) = dsn::mail_params(&[param("ENVID")]) {
        assert!(envid.chars().count() <= dsn::MAX_ENVID);
    }
    if let Ok(rcpt) = dsn::rcpt_params(&[param("NOTIFY")]) {
        let notify = rcpt.notify.map(|n| n.value()).unwrap_or_default();
        let again = dsn::rcpt_params(&[EsmtpParam {
            name: "NOTIFY".into(),
            value: Some(notify),
        }]);
        assert_eq!(again.ok().and_then(|r| r.notify), rcpt.notify);
    }
    if let Ok(rcpt) = dsn::rcpt_params(&[param("ORCPT")]) {
        if let Some(orcpt) = rcpt.orcpt {
            assert!(orcpt.address.chars().count() <= dsn::MAX_ORCPT);
            let again = dsn::rcpt_params(&[EsmtpParam {
                name: "ORCPT".into(),
                value: Some(orcpt.value()),
            }]);
            assert_eq!(again.ok().and_then(|r| r.orcpt), Some(orcpt));
        }
    }
});
