"""Reads Authentication-Results fields with python3-authres (Debian's), as a strict consumer
would; fails on a field it cannot parse.

Usage: authres_parse.py < fields, one per line, unfolded, without the field name.
Prints one line per result: "METHOD=RESULT ptype.property=value ..." (reason left out).
"""

import sys

import authres
import authres.arc  # noqa: F401  (registers the arc method)
import authres.dmarc  # noqa: F401  (registers the dmarc method)

for line in sys.stdin.read().splitlines():
    if not line.strip():
        continue
    header = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + line)
    for result in header.results:
        props = " ".join(f"{p.type}.{p.name}={p.value}" for p in result.properties)
        print(f"{result.method}={result.result} {props}".strip())
