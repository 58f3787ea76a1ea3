#!/usr/bin/env python3
"""A scriptable SMTP server for the relay tests.

sink.py PORT DIR [--reject PREFIX] [--tempfail PREFIX] [--delay-dot SECONDS] [--tls CERT KEY]
Accepts every message on 127.0.0.1:PORT and stores transaction N as DIR/N.json (envelope),
DIR/N.raw (the DATA bytes exactly as received, dot-stuffed) and DIR/N.eml (unstuffed).
Recipients whose local part starts with the --reject PREFIX get "550 5.1.1", those whose local
part starts with the --tempfail PREFIX get "450 4.2.1" (every time). With --delay-dot the reply to
the final "." comes SECONDS after the message is stored. With --tls it offers STARTTLS with
that certificate and key (PEM), and the envelope says whether the transaction came over TLS.
"""
import json
import os
import socketserver
import ssl
import sys
import threading
import time

PORT, DIR = int(sys.argv[1]), sys.argv[2]
REJECT = sys.argv[sys.argv.index("--reject") + 1] if "--reject" in sys.argv else None
TEMPFAIL = sys.argv[sys.argv.index("--tempfail") + 1] if "--tempfail" in sys.argv else None
DELAY_DOT = float(sys.argv[sys.argv.index("--delay-dot") + 1]) if "--delay-dot" in sys.argv else 0
TLS = None
if "--tls" in sys.argv:
    at = sys.argv.index("--tls")
    TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLS.load_cert_chain(sys.argv[at + 1], sys.argv[at + 2])
COUNTER = [0]
LOCK = threading.Lock()


class Session(socketserver.StreamRequestHandler):
    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self):
        self.reply("220 sink.test ESMTP")
        sender, rcpts, secure = None, [], False
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            verb = line.decode("utf-8", "replace").strip()
            upper = verb.upper()
            if upper.startswith("EHLO"):
                starttls = "250-STARTTLS\r\n" if TLS and not secure else ""
                self.reply("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                           + starttls + "250 SIZE 10000000")
            elif upper == "STARTTLS" and TLS and not secure:
                self.reply("220 2.0.0 go ahead")
                try:
                    conn = TLS.wrap_socket(self.request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                self.request, secure = conn, True
                self.rfile, self.wfile = conn.makefile("rb"), conn.makefile("wb", buffering=0)
                sender, rcpts = None, []
            elif upper.startswith("HELO"):
                self.reply("250 sink.test")
            elif upper.startswith("MAIL FROM:"):
                sender, rcpts = verb[10:].split(">")[0].lstrip("<"), []
                self.reply("250 2.1.0 ok")
            elif upper.startswith("RCPT TO:"):
                rcpt = verb[8:].split(">")[0].lstrip("<")
                if REJECT and rcpt.split("@")[0].startswith(REJECT):
                    self.reply("550 5.1.1 <%s>: no such mailbox here" % rcpt)
                elif TEMPFAIL and rcpt.split("@")[0].startswith(TEMPFAIL):
                    self.reply("450 4.2.1 <%s>: mailbox busy, try again later" % rcpt)
                else:
                    rcpts.append(rcpt)
                    self.reply("250 2.1.5 ok")
            elif upper == "DATA":
                if not rcpts:
                    self.reply("554 5.5.1 no valid recipients")
                    continue
                self.reply("354 go ahead")
                raw = b""
                while True:
                    chunk = self.rfile.readline(1 << 20)
                    if not chunk:
                        return
                    if chunk == b".\r\n":
                        break
                    raw += chunk
                unstuffed = b"".join(
                    l[1:] if l.startswith(b".") else l for l in raw.splitlines(keepends=True)
                )
                with LOCK:
                    COUNTER[0] += 1
                    n = COUNTER[0]
                base = os.path.join(DIR, str(n))
                with open(base + ".raw", "wb") as f:
                    f.write(raw)
                with open(base + ".eml", "wb") as f:
                    f.write(unstuffed)
                with open(base + ".json.tmp", "w") as f:
                    json.dump({"sender": sender, "recipients": rcpts, "tls": secure}, f)
                os.rename(base + ".json.tmp", base + ".json")
                time.sleep(DELAY_DOT)
                self.reply("250 2.0.0 queued as %d" % n)
            elif upper == "RSET":
                sender, rcpts = None, []
                self.reply("250 2.0.0 ok")
            elif upper == "NOOP":
                self.reply("250 2.0.0 ok")
            elif upper == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("502 5.5.2 unknown command")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    os.makedirs(DIR, exist_ok=True)
    Server(("127.0.0.1", PORT), Session).serve_forever()
