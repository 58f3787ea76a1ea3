"""Logged-in connections held open, for the per-user connection limit tests (standard library).
Usage: held_logins.py IMAPS_PORT POP3S_PORT JMAP_PORT, then commands on standard input, one a
line, each answered by one JSON line on standard output:
  open NAME imap|pop3|jmap USER PASSWORD  connects over TLS as NAME and logs in: IMAP LOGIN,
                                          POP3 USER/PASS, JMAP one Basic-authenticated GET of
                                          the session resource (the connection is kept)
  events NAME USER PASSWORD               opens a JMAP event source on a connection of its own
  plain NAME USER PASSWORD                IMAP AUTHENTICATE PLAIN on the open connection NAME
  close NAME                              IMAP LOGOUT / POP3 QUIT (JMAP: nothing), then reads
                                          to the server's close, or closes after 10 s
Answers: {"reply": the server's answer line} (IMAP, POP3), {"status": HTTP status, "json": the
body when it is JSON} (JMAP), {"error": text} when the connection broke."""
import base64
import json
import socket
import ssl
import sys

ports = {"imap": int(sys.argv[1]), "pop3": int(sys.argv[2]), "jmap": int(sys.argv[3])}
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed test certificate


class Connection:
    def __init__(self, protocol):
        self.protocol = protocol
        raw = socket.create_connection(("127.0.0.1", ports[protocol]), timeout=20)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.pending = b""

    def line(self):
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line.decode("latin-1")

    def send(self, text):
        self.sock.sendall(text.encode("latin-1"))

    def tagged(self, tag):
        while True:
            line = self.line()
            if line.startswith(tag + " "):
                return line

    def http_get(self, path, user, password):
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.send(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {token}\r\n\r\n")
        status = int(self.line().split()[1])
        length = 0
        while True:
            header = self.line()
            if not header:
                break
            name, _, value = header.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if path.startswith("/jmap/eventsource") and status == 200:
            return {"status": status}
        while len(self.pending) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.pending += chunk
        body, self.pending = self.pending[:length], self.pending[length:]
        try:
            return {"status": status, "json": json.loads(body)}
        except ValueError:
            return {"status": status, "body": body.decode("latin-1")}

    def close(self):
        try:
            if self.protocol == "imap":
                self.send("z LOGOUT\r\n")
            elif self.protocol == "pop3":
                self.send("QUIT\r\n")
            if self.protocol != "jmap":
                self.sock.settimeout(10)
                while self.sock.recv(65536):
                    pass
        except (OSError, ssl.SSLError):
            pass
        self.sock.close()


def log_in(conn, user, password):
    if conn.protocol == "imap":
        conn.line()  # greeting
        conn.send(f"a LOGIN {user} {password}\r\n")
        return {"reply": conn.tagged("a")}
    if conn.protocol == "pop3":
        conn.line()
        conn.send(f"USER {user}\r\n")
        conn.line()
        conn.send(f"PASS {password}\r\n")
        return {"reply": conn.line()}
    return conn.http_get("/.well-known/jmap", user, password)


connections = {}
for command in sys.stdin:
    words = command.split()
    if not words:
        continue
    try:
        if words[0] == "open":
            name, protocol, user, password = words[1:5]
            connections[name] = Connection(protocol)
            answer = log_in(connections[name], user, password)
        elif words[0] == "events":
            name, user, password = words[1:4]
            connections[name] = Connection("jmap")
            path = "/jmap/eventsource?types=*&closeafter=no&ping=0"
            answer = connections[name].http_get(path, user, password)
        elif words[0] == "plain":
            name, user, password = words[1:4]
            conn = connections[name]
            response = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            conn.send(f"p AUTHENTICATE PLAIN {response}\r\n")
            answer = {"reply": conn.tagged("p")}
        elif words[0] == "close":
            connections.pop(words[1]).close()
            answer = {"reply": "closed"}
        else:
            answer = {"error": f"unknown command {words[0]}"}
    except (OSError, ssl.SSLError, ValueError, IndexError) as e:
        answer = {"error": str(e)}
    print(json.dumps(answer), flush=True)
