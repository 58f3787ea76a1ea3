"""Checks the DKIM signatures of a message with dkimpy (Debian's python3-dkim), the DNS
answered from the records given on the command line.

Usage: dkim_verify.py MESSAGE_FILE NAME=TXT...
Prints one line per signature, top to bottom: "pass d=DOMAIN a=ALGORITHM" or "fail ...".
"""

import re
import sys

import dkim

message = open(sys.argv[1], "rb").read()
records = {}
for arg in sys.argv[2:]:
    name, txt = arg.split("=", 1)
    records[name.rstrip(".").lower()] = txt.encode()


def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return records.get(name.rstrip(".").lower())


checker = dkim.DKIM(message)
signatures = [v for (k, v) in checker.headers if k.lower() == b"dkim-signature"]
for index, value in enumerate(signatures):
    tags = {}
    for key, val in re.findall(rb"\b([a-z])=\s*([^;]*)", re.sub(rb"\s+", b" ", value)):
        tags.setdefault(key, val)
    ok = checker.verify(idx=index, dnsfunc=dnsfunc)
    domain, algorithm = tags.get(b"d", b"?").decode(), tags.get(b"a", b"?").decode()
    print(f"{'pass' if ok else 'fail'} d={domain} a={algorithm}")
