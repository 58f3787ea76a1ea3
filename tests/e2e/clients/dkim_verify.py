"""Checks a message's DKIM signatures or ARC chain with dkimpy (Debian's python3-dkim), the DNS
answered from the records given on the command line.

Usage: dkim_verify.py dkim|arc MESSAGE_FILE NAME=TXT...
dkim: one line per signature, top to bottom: "pass d=DOMAIN a=ALGORITHM" or "fail ...".
arc: one line "cv=RESULT sets=N COMMENT", RESULT being pass, fail or none.
"""

import re
import sys

import dkim

mode, path = sys.argv[1:3]
message = open(path, "rb").read()
records = {}
for arg in sys.argv[3:]:
    name, txt = arg.split("=", 1)
    records[name.rstrip(".").lower()] = txt.encode()


def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return records.get(name.rstrip(".").lower())


if mode == "arc":
    cv, results, comment = dkim.arc_verify(message, dnsfunc=dnsfunc)
    sets = len(re.findall(rb"^ARC-Seal:", message, re.IGNORECASE | re.MULTILINE))
    print(f"cv={cv.decode()} sets={sets} {comment}")
    sys.exit(0)

checker = dkim.DKIM(message)
signatures = [v for (k, v) in checker.headers if k.lower() == b"dkim-signature"]
for index, value in enumerate(signatures):
    tags = {}
    for key, val in re.findall(rb"\b([a-z])=\s*([^;]*)", re.sub(rb"\s+", b" ", value)):
        tags.setdefault(key, val)
    ok = checker.verify(idx=index, dnsfunc=dnsfunc)
    domain, algorithm = tags.get(b"d", b"?").decode(), tags.get(b"a", b"?").decode()
    print(f"{'pass' if ok else 'fail'} d={domain} a={algorithm}")
