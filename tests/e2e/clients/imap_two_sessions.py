"""Two IMAP sessions on one folder: one changes flags and expunges, the other sees it on NOOP.
Usage: imap_two_sessions.py IMAPS_PORT USER PASSWORD. Prints JSON."""
import imaplib
import json
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE


def session():
    imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=20)
    imap.login(user, password)
    imap.select("INBOX")
    return imap


a, b = session(), session()
a.store("1", "+FLAGS", "(\\Flagged)")
a.store("2", "+FLAGS", "(\\Deleted)")
a.expunge()
b.noop()
out = {k: [x.decode("latin-1") if isinstance(x, bytes) else str(x) for x in v]
       for k, v in b.untagged_responses.items()}
out["b_search_all"] = b.search(None, "ALL")[1][0].decode()
print(json.dumps(out))
