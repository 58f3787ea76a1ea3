//! QUOTA (RFC 9208) with the one resource we limit, STORAGE: every folder of a user shares
//! one quota root, `""`, whose limit is `limits.max-mailbox-bytes-per-user` (no limit: no
//! resource is listed). Figures are in units of 1024 octets, usage rounded up. The limit is
//! the operator's: SETQUOTA is refused.

use super::ImapSession;
use crate::access::imap::flags::failure;
use crate::store::mailbox::usage;

/// The one quota root, shared by every folder of the user.
const ROOT: &str = "\"\"";

impl ImapSession {
    /// GETQUOTAROOT, GETQUOTA or SETQUOTA with the rest of the command line: the untagged
    /// replies and the tagged reply's text. File work: call off the async workers.
    pub(super) fn quota_command(&self, verb: &str, argument: &str) -> (Vec<String>, String) {
        match verb {
            "GETQUOTAROOT" => {
                let mailbox = argument.trim();
                if mailbox.is_empty() {
                    return (Vec::new(), "BAD GETQUOTAROOT needs a mailbox".into());
                }
                match self.quota_line() {
                    Ok(quota) => (
                        vec![format!("* QUOTAROOT {mailbox} {ROOT}"), quota],
                        "OK GETQUOTAROOT completed".into(),
                    ),
                    Err(reply) => (Vec::new(), reply),
                }
            }
            "GETQUOTA" => match argument.trim() {
                ROOT => match self.quota_line() {
                    Ok(quota) => (vec![quota], "OK GETQUOTA completed".into()),
                    Err(reply) => (Vec::new(), reply),
                },
                _ => (Vec::new(), "NO [NONEXISTENT] No such quota root".into()),
            },
            _ => (
                Vec::new(),
                "NO [NOPERM] Quotas are set by the server's configuration".into(),
            ),
        }
    }

    /// `* QUOTA "" (STORAGE used limit)`, or `* QUOTA "" ()` without a limit.
    fn quota_line(&self) -> Result<String, String> {
        let limit = self.shared.config.limits.max_mailbox_bytes_per_user;
        if limit == 0 {
            return Ok(format!("* QUOTA {ROOT} ()"));
        }
        let used = usage(&self.maildir()).map_err(|e| failure("Cannot count usage", &e))?;
        Ok(format!(
            "* QUOTA {ROOT} (STORAGE {} {})",
            used.div_ceil(1024),
            limit / 1024
        ))
    }
}
