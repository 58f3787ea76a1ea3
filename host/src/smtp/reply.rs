//! SMTP replies on the wire, and the Received header's date.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::mail::Reply;

/// The class of a reply line (`2xx`...), as metrics count it; `None` for anything else.
pub fn class(bytes: &[u8]) -> Option<&'static str> {
    match bytes.first()? {
        b'2' => Some("2xx"),
        b'3' => Some("3xx"),
        b'4' => Some("4xx"),
        b'5' => Some("5xx"),
        _ => None,
    }
}

/// Formats a reply: `CODE-text` lines, the last one `CODE text`, each with the enhanced status.
pub fn format(reply: &Reply) -> Vec<u8> {
    let status = reply
        .enhanced
        .map(|(c, s, d)| format!("{c}.{s}.{d} "))
        .unwrap_or_default();
    let lines: Vec<&str> = if reply.lines.is_empty() {
        vec![""]
    } else {
        reply.lines.iter().map(String::as_str).collect()
    };
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{}{sep}{status}{line}\r\n", reply.code).as_bytes());
    }
    out
}

/// A one-line reply.
pub fn line(code: u16, enhanced: (u8, u16, u16), text: &str) -> Vec<u8> {
    format(&Reply::new(code, enhanced, text))
}

/// The current time as an RFC 5322 date in UTC, e.g. `Sun, 22 Nov 2026 09:00:00 +0000`.
pub fn rfc5322_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc5322(secs)
}

pub fn rfc5322(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_replies() {
        let reply = Reply {
            code: 250,
            enhanced: None,
            lines: vec!["mx.example".into(), "PIPELINING".into()],
        };
        assert_eq!(format(&reply), b"250-mx.example\r\n250 PIPELINING\r\n");
        assert_eq!(line(550, (5, 1, 1), "no"), b"550 5.1.1 no\r\n");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322(1_795_338_000), "Sun, 22 Nov 2026 09:00:00 +0000");
    }
}
