//! URLAUTH (RFC 4467) as a client uses it, with Python's imaplib sending the raw commands:
//! the owner authorizes a URL of a message with GENURLAUTH, and URLFETCH gives its body while
//! the URL is intact, unexpired, fetched by whom its access identifier names and its key not
//! reset; NIL otherwise.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use mailgate_e2e::{free_port, root, wait_for_port, Gateway};
use serde_json::Value;

/// Logs `user` in over IMAPS and runs `steps` (Python statements over `c`, the connection,
/// with `gen(url)` -> the authorized URL or None and `fetch(url)` -> the body as text or None);
/// what they put in `out` comes back as JSON.
fn session(gw: &Gateway, user: &str, steps: &str) -> Value {
    let local = user.split('@').next().unwrap_or("");
    let script = format!(
        r#"
import imaplib, json, ssl
for verb in ('GENURLAUTH', 'URLFETCH', 'RESETKEY'):
    imaplib.Commands[verb] = ('AUTH', 'SELECTED')
c = imaplib.IMAP4_SSL('127.0.0.1', {port}, ssl_context=ssl._create_unverified_context())
c.login('{user}', 'pw-{local}')
def gen(url):
    typ, _ = c._simple_command('GENURLAUTH', '"' + url + '"', 'INTERNAL')
    if typ != 'OK':
        return None
    _, data = c._untagged_response(typ, [None], 'GENURLAUTH')
    return data[-1].decode().strip('"')
def fetch(url):
    typ, _ = c._simple_command('URLFETCH', '"' + url + '"')
    assert typ == 'OK', typ
    _, data = c._untagged_response(typ, [None], 'URLFETCH')
    got = [d for d in data if d is not None]
    if isinstance(got[0], tuple):
        return got[0][1].decode()
    assert got[0].decode().endswith(' NIL'), got
    return None
out = {{}}
{steps}
c.logout()
print(json.dumps(out))
"#,
        port = gw.imaps,
    );
    let done = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    serde_json::from_slice(&done.stdout).expect("json")
}

const FIRST: &str = "Subject: first\r\n\r\nthe first body\r\n";
const SECOND: &str = "Subject: second\r\n\r\nthe second body\r\n";

/// The rump of a URL of alice's INBOX message `uid`, with `extra` (`;EXPIRE=...`) before its
/// access identifier `access`.
fn url(uid: u32, extra: &str, access: &str) -> String {
    format!("imap://alice@example.test/INBOX/;UID={uid}{extra};URLAUTH={access}")
}

#[test]
fn urlfetch_gives_the_body_of_an_intact_live_url_and_nil_otherwise() {
    let gw = Gateway::start("");
    let steps = format!(
        r#"
c.append('INBOX', None, None, {FIRST:?}.encode())
c.append('INBOX', None, None, {SECOND:?}.encode())
mine = gen({own:?})
out['own'] = fetch(mine)
out['shape'] = mine
# Another message's UID under the first one's token.
out['other_uid'] = fetch(mine.replace(';UID=1;', ';UID=2;'))
# One hex digit of the token changed.
last = mine[-1]
out['bad_token'] = fetch(mine[:-1] + ('0' if last != '0' else '1'))
out['no_token'] = fetch({own:?})
out['expired'] = fetch(gen({expired:?}))
out['unexpired'] = fetch(gen({unexpired:?}))
out['for_bob'] = gen({for_bob:?})
out['authuser'] = gen({authuser:?})
out['section'] = fetch(gen({section:?}))
out['not_owner'] = gen({not_owner:?})
"#,
        own = url(1, "", "user+alice@example.test"),
        expired = url(1, ";EXPIRE=2000-01-01T00:00:00Z", "user+alice@example.test"),
        unexpired = url(2, ";EXPIRE=2999-01-01T00:00:00Z", "user+alice@example.test"),
        for_bob = url(1, "", "user+bob@example.test"),
        authuser = url(2, "", "authuser"),
        section = "imap://alice@example.test/INBOX/;UID=2/;SECTION=TEXT;URLAUTH=anonymous",
        not_owner = "imap://bob@example.test/INBOX/;UID=1;URLAUTH=anonymous",
    );
    let alice = session(&gw, "alice@example.test", &steps);
    assert_eq!(alice["own"], FIRST);
    let shape = alice["shape"].as_str().expect("a URL");
    assert!(
        shape.starts_with(&format!(
            "{}:INTERNAL:",
            url(1, "", "user+alice@example.test")
        )),
        "{shape}"
    );
    for nil in ["other_uid", "bad_token", "no_token", "expired"] {
        assert_eq!(alice[nil], Value::Null, "{nil}: {alice}");
    }
    assert_eq!(alice["unexpired"], SECOND);
    assert_eq!(alice["section"], "the second body\r\n");
    assert_eq!(alice["not_owner"], Value::Null, "only the owner signs");

    // Bob: the URL made for him and the authuser one work; alice's own does not.
    let bob_steps = format!(
        "out['for_bob'] = fetch({for_bob:?})\nout['authuser'] = fetch({authuser:?})\n\
         out['alices'] = fetch({alices:?})\n",
        for_bob = alice["for_bob"].as_str().expect("for bob"),
        authuser = alice["authuser"].as_str().expect("authuser"),
        alices = shape,
    );
    let bob = session(&gw, "bob@example.test", &bob_steps);
    assert_eq!(bob["for_bob"], FIRST);
    assert_eq!(bob["authuser"], SECOND);
    assert_eq!(bob["alices"], Value::Null, "user+alice is alice's only");

    // The key is alice's alone to read, and RESETKEY voids every URL made with it.
    let keys = gw
        .data()
        .join("mail/example.test/alice/mailgate-urlauth-keys");
    let mode = std::fs::metadata(&keys)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", keys.display());
    let reset = format!(
        "c._simple_command('RESETKEY', 'INBOX')\nout['after'] = fetch({shape:?})\n\
         out['fresh'] = fetch(gen({own:?}))\n",
        own = url(1, "", "user+alice@example.test"),
    );
    let after = session(&gw, "alice@example.test", &reset);
    assert_eq!(after["after"], Value::Null);
    assert_eq!(after["fresh"], FIRST);
}

/// The base64 attachment's bytes: every byte value, NUL and 0xFF included.
fn attachment() -> Vec<u8> {
    (0..300u32).map(|i| (i * 7 % 256) as u8).collect()
}

/// The quoted-printable part as stored, and the bytes it stands for.
const QP_STORED: &str = "Gr=C3=BC=C3=9Fe aus M=C3=BCnchen, a soft =\r\nbreak and a tab=09.";
const QP_DECODED: &str = "Grüße aus München, a soft break and a tab\t.";

/// URLAUTH=BINARY (RFC 5524): URLFETCH's extended form gives a base64 attachment and a
/// quoted-printable part decoded (a literal8 where the bytes hold a NUL), their
/// BODYPARTSTRUCTURE with the sizes of what BINARY gives (of what BODY gives next to BODY),
/// and NIL with an untagged NO [UNKNOWN-CTE] for an encoding nobody can undo.
#[test]
fn urlfetch_binary_gives_decoded_parts_and_their_structure() {
    let gw = Gateway::start("");
    let steps = format!(
        r#"
import base64, re
caps = c.capability()[1][0].decode().split()
out['caps'] = caps
data = bytes((i * 7) % 256 for i in range(300))
b64 = base64.encodebytes(data).replace(b'\n', b'\r\n')
msg = (b'Subject: parts\r\nMIME-Version: 1.0\r\n'
       b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
       b'--b\r\nContent-Type: text/plain; charset=utf-8\r\n'
       b'Content-Transfer-Encoding: quoted-printable\r\n\r\n' + {qp:?}.encode() + b'\r\n'
       b'--b\r\nContent-Type: application/octet-stream; name="blob.bin"\r\n'
       b'Content-Transfer-Encoding: base64\r\n\r\n' + b64 +
       b'--b\r\nContent-Type: application/x-old\r\n'
       b'Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n'
       b'--b--\r\n')
c.append('INBOX', None, None, msg)
def xfetch(url, *params):
    typ, _ = c._simple_command('URLFETCH', '("' + url + '" ' + ' '.join(params) + ')')
    assert typ == 'OK', typ
    _, data = c._untagged_response(typ, [None], 'URLFETCH')
    got = [d for d in data if d is not None]
    no = c.untagged_responses.pop('NO', None)
    first = got[0]
    if isinstance(first, tuple):
        return {{'head': first[0].decode(), 'bytes': first[1].hex(),
                 'no': [n.decode() for n in no] if no else None}}
    return {{'head': first.decode(), 'bytes': None, 'no': [n.decode() for n in no] if no else None}}
base = 'imap://alice@example.test/INBOX/;UID=1/;SECTION='
qp = gen(base + '1;URLAUTH=user+alice@example.test')
blob = gen(base + '2;URLAUTH=user+alice@example.test')
old = gen(base + '3;URLAUTH=user+alice@example.test')
out['qp'] = xfetch(qp, 'BINARY')
out['blob'] = xfetch(blob, 'BODYPARTSTRUCTURE', 'BINARY')
out['blob_body'] = xfetch(blob, 'BODY', 'BODYPARTSTRUCTURE')
out['blob_structure'] = xfetch(blob, 'BODYPARTSTRUCTURE')
out['old'] = xfetch(old, 'BINARY')
out['b64_len'] = len(b64) - 2
try:
    out['both'] = c._simple_command('URLFETCH', '("' + blob + '" BODY BINARY)')[0]
except c.error as e:
    out['both'] = str(e)
out['plain'] = fetch(blob)
"#,
        qp = QP_STORED,
    );
    let alice = session(&gw, "alice@example.test", &steps);
    let caps = alice["caps"].as_array().expect("capabilities");
    assert!(caps.iter().any(|c| c == "URLAUTH=BINARY"), "{caps:?}");

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let qp = &alice["qp"];
    assert_eq!(qp["bytes"], hex(QP_DECODED.as_bytes()), "{qp}");
    let head = qp["head"].as_str().expect("head");
    assert!(
        head.ends_with(&format!("(BINARY {{{}}}", QP_DECODED.len())),
        "{head}"
    );

    // The attachment: decoded bytes as a literal8, its structure sized as decoded.
    let blob = &alice["blob"];
    assert_eq!(blob["bytes"], hex(&attachment()), "{blob}");
    let head = blob["head"].as_str().expect("head");
    assert!(
        head.contains(
            "(BODYPARTSTRUCTURE (\"application\" \"octet-stream\" (\"name\" \"blob.bin\") NIL NIL \
             \"base64\" 300 NIL NIL NIL NIL) BINARY ~{300}"
        ),
        "{head}"
    );
    // Next to BODY: the bytes as stored and their stored size.
    let encoded = alice["b64_len"].as_u64().expect("length");
    let body = &alice["blob_body"];
    let head = body["head"].as_str().expect("head");
    assert!(
        head.contains(&format!(
            "\"base64\" {encoded} NIL NIL NIL NIL) BODY {{{encoded}}}"
        )),
        "{head}"
    );
    let stored = body["bytes"].as_str().expect("bytes");
    assert!(stored.starts_with(&hex(b"AAcOFRwj")), "{stored}");
    let only = alice["blob_structure"]["head"].as_str().expect("head");
    assert!(
        only.ends_with(&format!("\"base64\" {encoded} NIL NIL NIL NIL))")),
        "{only}"
    );

    // An encoding nobody can undo: BINARY NIL, and why.
    let old = &alice["old"];
    assert!(
        old["head"]
            .as_str()
            .is_some_and(|h| h.ends_with("(BINARY NIL)")),
        "{old}"
    );
    let no = old["no"].to_string();
    assert!(
        no.contains("[UNKNOWN-CTE]") && no.contains("x-uuencode"),
        "{no}"
    );

    let both = alice["both"].as_str().expect("refusal");
    assert!(both.contains("BAD") && both.contains("exclude"), "{both}");
    assert!(
        alice["plain"]
            .as_str()
            .is_some_and(|p| p.starts_with("AAcOFRwj")),
        "the plain form stays as stored: {}",
        alice["plain"]
    );
}

/// Dovecot (Debian's dovecot-imapd, whose imap-urlauth services give URLAUTH=BINARY) on
/// loopback over plain IMAP: any user, password `pw-alice`, mail under a temporary folder.
/// Stopped on drop.
struct Dovecot {
    dir: tempfile::TempDir,
    port: u16,
}

impl Dovecot {
    fn start() -> Dovecot {
        assert!(
            std::path::Path::new("/usr/lib/dovecot/imap-urlauth").exists(),
            "Dovecot's imap-urlauth is missing: `cargo xtask test` installs dovecot-imapd"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        // Dovecot's processes run as nobody, who must get through to the folders below.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        for sub in ["home", "mail"] {
            let status = Command::new("install")
                .args(["-d", "-o", "nobody", "-g", "nogroup"])
                .arg(dir.path().join(sub))
                .status()
                .expect("install");
            assert!(status.success());
        }
        let base = dir.path().display();
        let port = free_port();
        std::fs::write(
            dir.path().join("dovecot.conf"),
            format!(
                "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {base}/run\n\
                 log_path = {base}/dovecot.log\nssl = no\ndisable_plaintext_auth = no\n\
                 mail_location = maildir:{base}/mail/%n\n\
                 mail_attribute_dict = file:{base}/home/%n-attributes\n\
                 imap_urlauth_host = *\n\
                 namespace inbox {{\n inbox = yes\n separator = /\n}}\n\
                 passdb {{\n driver = static\n args = password=pw-alice\n}}\n\
                 userdb {{\n driver = static\n args = uid=nobody gid=nogroup home={base}/home/%n\n}}\n\
                 service imap-login {{\n inet_listener imap {{\n  address = 127.0.0.1\n  port = {port}\n }}\n}}\n\
                 service anvil {{\n chroot =\n}}\n\
                 service imap-urlauth-login {{\n chroot =\n}}\n"
            ),
        )
        .expect("config");
        let dovecot = Dovecot { dir, port };
        let started = Command::new("dovecot")
            .arg("-c")
            .arg(dovecot.config())
            .status();
        assert!(started.is_ok_and(|s| s.success()), "dovecot did not start");
        wait_for_port(port);
        dovecot
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("dovecot.conf")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(self.config())
            .arg("stop")
            .status();
    }
}

/// `urlfetch_forms.py` against one server: `[section, parameters, response]` for each URL and
/// form, a literal8's `~` taken out (Dovecot sends one for every decoded part, we only where a
/// NUL needs it; both are right, RFC 3516 §4.3).
fn forms(port: u16, tls: bool, user: &str, url_user: &str) -> Vec<Value> {
    let script = root().join("tests/e2e/clients/urlfetch_forms.py");
    let done = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(if tls { "1" } else { "0" })
        .args([user, "pw-alice", url_user, "forms"])
        .output()
        .expect("python3");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&done.stdout).expect("json");
    answers
        .into_iter()
        .map(|a| match a[2].as_str() {
            Some(text) => serde_json::json!([a[0], a[1], text.replace("~{", "{")]),
            None => a,
        })
        .collect()
}

/// Both servers give the same bytes for every extended URLFETCH of every section of one
/// message: BINARY decoded (nested parts and their headers too, PARTIAL counted in decoded
/// bytes, a MIME header as stored), BODYPARTSTRUCTURE sized as what BINARY gives, BODY as
/// stored.
#[test]
fn urlfetch_extended_forms_are_dovecots() {
    let dovecot = Dovecot::start();
    let theirs = forms(dovecot.port, false, "alice", "alice");
    let gw = Gateway::start("");
    let ours = forms(gw.imaps, true, "alice@example.test", "alice");
    assert_eq!(ours.len(), 48);
    assert_eq!(theirs.len(), ours.len());
    for (mine, dovecots) in ours.iter().zip(&theirs) {
        assert_eq!(mine, dovecots, "ours, then Dovecot's");
    }
}
