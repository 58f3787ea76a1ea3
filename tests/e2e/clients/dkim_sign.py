"""Signs a message with dkimpy (Debian's python3-dkim), as a sending MTA would.

Usage: dkim_sign.py KEY_FILE SELECTOR DOMAIN ALGORITHM < message > signed message
KEY_FILE is what dknewkey wrote; ALGORITHM is rsa-sha256 or ed25519-sha256.
"""

import sys

import dkim

key_file, selector, domain, algorithm = sys.argv[1:5]
key = open(key_file, "rb").read().strip()
message = sys.stdin.buffer.read()
signature = dkim.sign(
    message,
    selector.encode(),
    domain.encode(),
    key,
    signature_algorithm=algorithm.encode(),
    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
)
sys.stdout.buffer.write(signature + message)
