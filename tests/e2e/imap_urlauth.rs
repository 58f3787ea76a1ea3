//! URLAUTH (RFC 4467) as a client uses it, with Python's imaplib sending the raw commands:
//! the owner authorizes a URL of a message with GENURLAUTH, and URLFETCH gives its body while
//! the URL is intact, unexpired, fetched by whom its access identifier names and its key not
//! reset; NIL otherwise.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use mailgate_e2e::Gateway;
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
