"""CONDSTORE/QRESYNC resynchronisation with Python's imaplib, as an offline-capable client does
it: session A remembers UIDVALIDITY, HIGHESTMODSEQ and the UIDs it has; session B changes the
mailbox (flags, an expunge, a delivery by APPEND); A comes back and asks only for what changed.
Usage: imap_resync.py PORT USER PASSWORD. Prints one JSON object."""
import imaplib
import json
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE


def connect():
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=20)
    m.login(user, password)
    return m


def untagged(m, name):
    return [d.decode() if isinstance(d, bytes) else str(d) for d in m.untagged_responses.pop(name, [])]


out = {}
a = connect()
out["enable"] = a.enable("CONDSTORE")[1][0].decode()
typ, _ = a._simple_command("SELECT", "INBOX", "(CONDSTORE)")
a.state = "SELECTED"  # imaplib's select() takes no parameters
codes = untagged(a, "HIGHESTMODSEQ") + untagged(a, "UIDVALIDITY")
out["select"] = codes
highest, validity = int(codes[0]), int(codes[1])
typ, data = a.uid("FETCH", "1:*", "(FLAGS MODSEQ)")
out["first_fetch"] = [d.decode() for d in data if d]
known = [int(d.decode().split("UID ")[1].split()[0]) for d in data if d]
a.logout()

b = connect()
b.select("INBOX")
b.uid("STORE", str(known[0]), "+FLAGS", "(\\Flagged $Important)")
b.uid("STORE", str(known[1]), "+FLAGS", "(\\Deleted)")
b.expunge()
b.append("INBOX", None, None, b"Subject: later\r\n\r\nnew\r\n")
b.logout()

a = connect()
out["enable_qresync"] = a.enable("QRESYNC")[1][0].decode()
known_set = ",".join(str(u) for u in known)
typ, _ = a._simple_command("SELECT", "INBOX", f"(QRESYNC ({validity} {highest} {known_set}))")
a.state = "SELECTED"
out["resync_status"] = typ
out["vanished"] = untagged(a, "VANISHED")
out["changed"] = untagged(a, "FETCH")
typ, data = a.uid("FETCH", "1:*", f"(FLAGS) (CHANGEDSINCE {highest})")
out["changedsince"] = [d.decode() for d in data if d]
typ, data = a.uid("FETCH", known_set, f"(FLAGS) (CHANGEDSINCE {highest} VANISHED)")
out["changedsince_vanished"] = untagged(a, "VANISHED")
out["known"] = known
a.logout()
print(json.dumps(out))
