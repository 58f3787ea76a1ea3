#!/usr/bin/env python3
"""An HTTPS server for MTA-STS policies in the relay tests.

policy_server.py PORT DIR CERT KEY
Serves the files under DIR on 127.0.0.1:PORT over TLS with CERT and KEY (PEM), so
DIR/.well-known/mta-sts.txt is the policy (served as text/plain). Each request's path is
appended to DIR/requests.log.
"""
import functools
import http.server
import os
import ssl
import sys

PORT, DIR, CERT, KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(DIR, "requests.log"), "a") as log:
            log.write(self.path + "\n")
        super().do_GET()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", PORT), functools.partial(Handler, directory=DIR)
    )
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
