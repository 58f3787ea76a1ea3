"""A raw IMAP client over implicit TLS that sends exactly the bytes it is given.
Usage: imap_raw.py PORT < STEPS_JSON
STEPS_JSON (on standard input: it may be large) is a list of [bytes_to_send (latin-1 text),
what_to_wait_for] or [bytes, what_to_wait_for, session number]: steps of session 1, 2... go over
connections of their own, opened at their first step (session 0 is the first); what_to_wait_for is
a tag (read until that tag's completion line), "+" (read until a continuation request or any
tagged line), "~TEXT" (read until a line containing TEXT), "!PATH" (create the file PATH, to
tell a test that this point was reached), or "" (send only). Prints one JSON list: the greeting, then what each step read
(latin-1 text; "<closed>" appended when the server closed the connection)."""
import json
import socket
import ssl
import sys

port, steps = int(sys.argv[1]), json.load(sys.stdin)
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed test certificate


class Session:
    """One connection: its socket and the bytes read but not yet taken."""

    def __init__(self):
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60))
        self.pending = b""

    def read_line(self):
        """One line with its CRLF, or None when the connection closed."""
        while b"\r\n" not in self.pending:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionError, ssl.SSLError, socket.timeout):
                chunk = b""
            if not chunk:
                return None
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line + b"\r\n"

    def read_until(self, tag):
        got = b""
        while True:
            line = self.read_line()
            if line is None:
                return got.decode("latin-1") + "<closed>"
            got += line
            if tag == "+" and (line.startswith(b"+") or not line.startswith(b"*")):
                return got.decode("latin-1")
            if tag.startswith("~") and tag[1:].encode() in line:
                return got.decode("latin-1")
            if tag and tag != "+" and not tag.startswith("~") and line.startswith(tag.encode() + b" "):
                return got.decode("latin-1")
            if line.startswith(b"* BYE"):
                rest = self.read_line()
                if rest is None:
                    return got.decode("latin-1") + "<closed>"
                got += rest
            # A literal in a response: read its bytes whole so they are not taken for lines.
            if line.rstrip(b"\r\n").endswith(b"}") and b"{" in line:
                size = int(line.rstrip(b"\r\n").rsplit(b"{", 1)[1][:-1].rstrip(b"+"))
                while len(self.pending) < size:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        return got.decode("latin-1") + "<closed>"
                    self.pending += chunk
                got += self.pending[:size]
                self.pending = self.pending[size:]


sessions = {0: Session()}
out = [(sessions[0].read_line() or b"").decode("latin-1")]
for step in steps:
    data, wait = step[0], step[1]
    number = step[2] if len(step) > 2 else 0
    if number not in sessions:
        sessions[number] = Session()
        sessions[number].read_line()  # its greeting
    session = sessions[number]
    try:
        session.sock.sendall(data.encode("latin-1"))
    except (ConnectionError, ssl.SSLError):
        out.append("<closed>")
        break
    if wait.startswith("!"):
        open(wait[1:], "w").close()
        out.append("")
    else:
        out.append(session.read_until(wait) if wait else "")
print(json.dumps(out))
