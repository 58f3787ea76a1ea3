#!/usr/bin/env python3
"""A scriptable milter (protocol version 6) for the milter client tests.

milter.py PORT MODE LOG
Listens on 127.0.0.1:PORT and appends every command it receives, one per line, to LOG,
after the number of the connection it came on ("1 O", "1 C 127.0.0.1", "1 H name",
"1 M <a@b>", "1 R <c@d>", "1 L Subject: x", "1 B 123", "1 E", "1 A", "1 Q"...). MODE
decides how it answers:

  edits      continue everywhere; at end of message: add a header, insert one at the top,
             change the first Subject, add and delete a recipient, change the sender,
             replace the body
  reply      RCPT to a local part starting with "carol" gets "550 5.7.1 No such user here";
             a message whose subject holds "quarantine" is quarantined, one whose subject
             holds "discard" is discarded, one whose subject holds "later" gets tempfail
  silent     negotiates, then never answers again
  garbage    answers the negotiation with bytes that are no milter packet
  oversized  announces a 100 MB packet at the end of message
  hangup     negotiates and answers, then closes the connection at the first body chunk
"""
import socket
import socketserver
import struct
import sys
import threading
import time

PORT, MODE, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
LOCK = threading.Lock()


CONNECTIONS = [0]
LOCAL = threading.local()


def log(line):
    with LOCK, open(LOG, "a") as f:
        f.write("%d %s\n" % (LOCAL.connection, line))


def packet(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


def cstr(text):
    return text.encode() + b"\0"


class Session(socketserver.BaseRequestHandler):
    def read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def send(self, cmd, data=b""):
        self.request.sendall(packet(cmd, data))

    def handle(self):
        with LOCK:
            CONNECTIONS[0] += 1
            LOCAL.connection = CONNECTIONS[0]
        subject = ""
        try:
            while True:
                (length,) = struct.unpack(">I", self.read(4))
                body = self.read(length)
                cmd, data = body[:1], body[1:]
                if not self.answer(cmd, data, subject):
                    return
                if cmd == b"L":
                    name, _, value = data.partition(b"\0")
                    if name.lower() == b"subject":
                        subject = value.rstrip(b"\0").decode(errors="replace")
        except (EOFError, ConnectionError):
            return

    def answer(self, cmd, data, subject):
        strings = [s.decode(errors="replace") for s in data.split(b"\0")]
        if cmd == b"O":
            log("O")
            if MODE == "garbage":
                self.request.sendall(b"\x00\x00\x00\x05Xjunk and more junk\r\n")
                return True
            actions = 0x1FF & ~0x100
            self.send(b"O", struct.pack(">III", 6, actions, 0))
            return True
        if cmd == b"D":
            return True
        if cmd == b"C":
            log("C " + self.connect_address(data))
        elif cmd == b"H":
            log("H " + strings[0])
        elif cmd == b"M":
            log("M " + " ".join(s for s in strings if s))
        elif cmd == b"R":
            log("R " + " ".join(s for s in strings if s))
        elif cmd == b"L":
            value = strings[1] if len(strings) > 1 else ""
            log("L %s: %s" % (strings[0], value.replace("\n", "\\n")))
        elif cmd == b"B":
            log("B %d" % len(data))
        else:
            log(cmd.decode(errors="replace"))
        if cmd in (b"A", b"Q"):
            return cmd != b"Q"
        if MODE == "silent":
            time.sleep(3600)
        if MODE == "hangup" and cmd == b"B":
            self.request.shutdown(socket.SHUT_RDWR)
            return False
        if cmd == b"R" and MODE == "reply" and strings[0].startswith("<carol"):
            self.send(b"y", cstr("550 5.7.1 No such user here"))
            return True
        if cmd == b"E":
            return self.end_of_message(subject)
        self.send(b"c")
        return True

    def connect_address(self, data):
        host, _, rest = data.partition(b"\0")
        family = rest[:1]
        if family in (b"4", b"6"):
            return rest[3:].rstrip(b"\0").decode()
        return host.decode()

    def end_of_message(self, subject):
        if MODE == "oversized":
            self.request.sendall(struct.pack(">I", 100 * 1024 * 1024) + b"h")
            time.sleep(60)
            return False
        if MODE == "edits":
            self.send(b"h", cstr("X-Milter") + cstr("seen by the scripted milter"))
            self.send(b"i", struct.pack(">I", 0) + cstr("X-Milter-Top") + cstr("inserted at the top"))
            self.send(b"m", struct.pack(">I", 1) + cstr("Subject") + cstr("[milter] " + subject))
            self.send(b"+", cstr("<carol@example.test>"))
            self.send(b"-", cstr("<bob@example.test>"))
            self.send(b"e", cstr("<bounces@example.test>"))
            self.send(b"p")
            self.send(b"b", b"Body replaced by the milter.\r\n")
            self.send(b"c")
            return True
        if MODE == "reply" and "quarantine" in subject:
            self.send(b"q", cstr("held by the scripted milter"))
            self.send(b"a")
            return True
        if MODE == "reply" and "discard" in subject:
            self.send(b"d")
            return True
        if MODE == "reply" and "later" in subject:
            self.send(b"t")
            return True
        self.send(b"a")
        return True


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


Server(("127.0.0.1", PORT), Session).serve_forever()
