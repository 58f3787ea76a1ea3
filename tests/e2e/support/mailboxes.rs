//! What a test gateway delivered: its users' Maildir files, read and waited for.

use crate::{wait_until, Gateway, RawSmtp};

impl Gateway {
    /// The delivered files of a user (new/ and cur/), read.
    pub fn mailbox(&self, address: &str) -> Vec<String> {
        let (local, domain) = address.split_once('@').expect("address");
        let root = self.data().join("mail").join(domain).join(local);
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(root.join(sub)) {
                for e in entries.flatten() {
                    out.push(
                        String::from_utf8_lossy(&std::fs::read(e.path()).expect("read mail"))
                            .into_owned(),
                    );
                }
            }
        }
        out
    }

    /// Sends messages to a local user over one plain SMTP session (each `data` is the DATA
    /// text, already dot-stuffed, without the final dot) and waits until all are delivered.
    pub fn deliver_local(&self, to: &str, data: &[String]) {
        let before = self.mailbox(to).len();
        let (mut smtp, _) = RawSmtp::connect(self.inbound);
        smtp.cmd("EHLO client.test");
        for text in data {
            assert!(smtp
                .cmd("MAIL FROM:<sender@client.test>")
                .starts_with("250"));
            assert!(smtp.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
            assert!(smtp.cmd("DATA").starts_with("354"));
            smtp.send(format!("{text}.\r\n").as_bytes());
            assert!(smtp.reply().starts_with("250"));
        }
        smtp.cmd("QUIT");
        assert!(wait_until(10, || self.mailbox(to).len() == before + data.len()));
    }

    /// A file put into a user's Maildir (`new/`) by another program, as procmail, Postfix
    /// `virtual` or a migration would.
    pub fn store_directly(&self, address: &str, name: &str, raw: &[u8]) {
        let (local, domain) = address.split_once('@').expect("address");
        let maildir = self.data().join("mail").join(domain).join(local);
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        std::fs::write(maildir.join("new").join(name), raw).expect("store");
    }

    /// Waits until `address` has `n` messages (delivery is asynchronous to the 250).
    pub fn wait_mailbox(&self, address: &str, n: usize) -> Vec<String> {
        for _ in 0..100 {
            let mail = self.mailbox(address);
            if mail.len() >= n {
                return mail;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.mailbox(address)
    }

    /// Waits for a delivered message of `address` containing `needle`, and returns it.
    pub fn wait_mailbox_matching(&self, address: &str, needle: &str) -> String {
        for _ in 0..200 {
            if let Some(m) = self
                .mailbox(address)
                .into_iter()
                .find(|m| m.contains(needle))
            {
                return m;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no message with {needle:?} for {address}");
    }

    /// The mailbox once delivery has had time to run (for checking that nothing arrived).
    pub fn settled_mailbox(&self, address: &str) -> Vec<String> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.mailbox(address)
    }

    /// Files left in any Maildir tmp/ (half-written deliveries).
    pub fn half_written(&self) -> usize {
        let root = self.data().join("mail");
        let mut count = 0;
        for domain in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for user in std::fs::read_dir(domain.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                count += std::fs::read_dir(user.path().join("tmp"))
                    .map(|d| d.count())
                    .unwrap_or(0);
            }
        }
        count
    }
}
