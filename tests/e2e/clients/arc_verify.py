"""Validates a message's ARC chain with dkimpy (Debian's python3-dkim), the DNS answered from
the records given on the command line.

Usage: arc_verify.py MESSAGE_FILE NAME=TXT...
Prints "cv=RESULT sets=N", RESULT being pass, fail or none.
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


cv, results, comment = dkim.arc_verify(message, dnsfunc=dnsfunc)
sets = len(re.findall(rb"^ARC-Seal:", message, re.IGNORECASE | re.MULTILINE))
print(f"cv={cv.decode()} sets={sets} {comment}")
