"""IMAP (imaplib) beside JMAP: a folder's messages with their flags, after an optional change.
Usage: imap_flags.py IMAPS_PORT USER PASSWORD FOLDER [UID +FLAGS|-FLAGS (FLAG ...)]
Prints JSON: [{"uid": N, "flags": [...], "subject": "..."}] in UID order."""
import imaplib
import json
import re
import ssl
import sys

port, user, password, folder, *change = sys.argv[1:]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed test certificate
imap = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=context, timeout=20)
imap.login(user, password)
status, _ = imap.select(f'"{folder}"')
assert status == "OK", f"SELECT {folder}: {status}"
if change:
    uid, op, flags = change
    status, _ = imap.uid("STORE", uid, op, flags)
    assert status == "OK", f"STORE: {status}"
out = []
status, data = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
for i, item in enumerate(data):
    if not isinstance(item, tuple):
        continue
    # Items after the literal (FLAGS may come last) arrive as the next, plain element.
    after = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
    meta = (item[0] + after).decode()
    uid = int(re.search(r"UID (\d+)", meta).group(1))
    flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()
    flags = [f for f in flags if f != "\\Recent"]  # session state, not the message's
    subject = item[1].decode(errors="replace").partition(":")[2].strip()
    out.append({"uid": uid, "flags": sorted(flags), "subject": subject})
imap.logout()
print(json.dumps(sorted(out, key=lambda m: m["uid"])))
