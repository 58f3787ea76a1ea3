"""Adds an ARC set to a message with dkimpy (Debian's python3-dkim), as a forwarder would.

Usage: arc_sign.py KEY_FILE SELECTOR DOMAIN AUTHSERV_ID < message > sealed message
The message must carry an Authentication-Results field of AUTHSERV_ID; from the second set on,
its `arc=` result is the chain validation status the new seal states.
"""

import sys

import dkim

key_file, selector, domain, srv_id = sys.argv[1:5]
key = open(key_file, "rb").read()
message = sys.stdin.buffer.read()
fields = dkim.arc_sign(
    message, selector.encode(), domain.encode(), key, srv_id.encode(), linesep=b"\r\n"
)
if not fields:
    sys.exit("arc_sign made no ARC set")
sys.stdout.buffer.write(b"".join(fields) + message)
