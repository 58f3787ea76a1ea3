"""One IMAP client for two servers: mailgate (implicit TLS) and a Dovecot started by the test on
loopback (plain), both over the same Maildir.

  imap_peer.py run PORT TLS USER PASS < COMMANDS_JSON
      logs in, sends each command (without tag) in order, prints one JSON list: per command
      everything the server answered, literals included, up to and with the tagged line.
  imap_peer.py race OURS_PORT DOVECOT_PORT USER PASS DOVECOT_USER DOVECOT_PASS ROUNDS
      while one session on Dovecot changes flags and expunges (and appends as many back), a
      session on mailgate STOREs flags ROUNDS times on whatever messages exist; prints JSON
      {"stores": n, "failed": [tagged lines that were not OK], "dovecot_ops": n,
       "dovecot_failed": [...]}.
  imap_peer.py readers OURS_IMAPS OURS_POP3S DOVECOT_PORT USER PASS DOVECOT_USER DOVECOT_PASS N
      while Dovecot sets and clears flags on all N messages over and over (renaming every file
      each time), mailgate serves bodies (IMAP FETCH BODY[], POP3 RETR), copies, expunges and
      POP3 deletions of the same files; prints JSON {"checks": n, "failed": [what went wrong],
      "dovecot_ops": n}.
"""
import poplib
import json
import random
import socket
import ssl
import sys
import threading
import time


SYSTEM = ["\\Seen", "\\Flagged", "\\Answered"]


class Client:
    """A raw IMAP session: sends commands, returns what came back up to the tagged reply."""

    def __init__(self, port, tls, user, password):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the test certificate is self-signed
            sock = context.wrap_socket(sock)
        self.sock, self.pending, self.n = sock, b"", 0
        self.line()  # greeting
        answer = self.command(f"LOGIN {quote(user)} {quote(password)}")
        if not last_line(answer).split(" ", 2)[1:2] == ["OK"]:
            raise SystemExit(f"login failed: {answer}")

    def line(self):
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("connection closed")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line + b"\r\n"

    def exact(self, n):
        while len(self.pending) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("connection closed")
            self.pending += chunk
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def command(self, text):
        self.n += 1
        tag = f"t{self.n}"
        self.sock.sendall(f"{tag} {text}\r\n".encode("latin-1"))
        out = b""
        while True:
            line = self.line()
            out += line
            if line.endswith(b"}\r\n") and b"{" in line:
                size = line[line.rindex(b"{") + 1 : -3]
                if size.isdigit():
                    out += self.exact(int(size))
                    continue
            if line.startswith(tag.encode() + b" "):
                return out.decode("latin-1")


def quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def last_line(answer):
    return answer.rstrip("\r\n").split("\r\n")[-1]


def tagged_ok(answer):
    return last_line(answer).split(" ", 2)[1:2] == ["OK"]


def run(port, tls, user, password):
    commands = json.load(sys.stdin)
    client = Client(int(port), tls == "1", user, password)
    print(json.dumps([client.command(c) for c in commands]))


def message(i):
    return (f"From: peer@example.test\r\nSubject: race {i}\r\nMessage-ID: <race{i}@peer>\r\n\r\n"
            f"body {i}\r\n")


def race(ours, dovecot, user, password, d_user, d_password, rounds):
    rounds = int(rounds)
    done = threading.Event()
    result = {"stores": 0, "failed": [], "dovecot_ops": 0, "dovecot_failed": []}

    def dovecot_side():
        client = Client(int(dovecot), False, d_user, d_password)
        client.command("SELECT INBOX")
        rng, i = random.Random(2), 0
        while not done.is_set():
            i += 1
            op = rng.choice(["flag", "flag", "keyword", "expunge"])
            if op == "flag":
                flag = rng.choice(SYSTEM)
                answer = client.command(f"STORE {rng.randint(1, 19)} {rng.choice('+-')}FLAGS ({flag})")
            elif op == "keyword":
                flag = rng.choice(["$Label1", "$Label2"])
                answer = client.command(f"STORE {rng.randint(1, 19)} {rng.choice('+-')}FLAGS ({flag})")
            else:
                # One message out, one in: the folder keeps its size.
                client.command(f"STORE {rng.randint(1, 19)} +FLAGS (\\Deleted)")
                answer = client.command("EXPUNGE")
                body = message(f"d{i}")
                client.sock.sendall(f"a{i} APPEND INBOX {{{len(body)}+}}\r\n{body}\r\n".encode())
                while not client.line().startswith(f"a{i} ".encode()):
                    pass
            result["dovecot_ops"] += 1
            # Dovecot may refuse a sequence number past its view's end: not a failure of ours.
            if not tagged_ok(answer) and "Invalid messageset" not in answer \
                    and "No matching" not in answer:
                result["dovecot_failed"].append(last_line(answer))
            client.command("NOOP")

    thread = threading.Thread(target=dovecot_side)
    thread.start()
    client = Client(int(ours), True, user, password)
    client.command("SELECT INBOX")
    rng = random.Random(1)
    try:
        for n in range(rounds):
            flag = rng.choice(SYSTEM + ["$Label1", "Work"])
            # UIDs: those expunged meanwhile are simply not there (no error by RFC 3501).
            low = rng.randint(1, 40 + n // 20)
            uids = "1:*" if n % 10 == 0 else f"{low}:{low + rng.randint(0, 3)}"
            answer = client.command(f"UID STORE {uids} {rng.choice('+-')}FLAGS ({flag})")
            result["stores"] += 1
            if not tagged_ok(answer) and "Invalid" not in last_line(answer):
                result["failed"].append(last_line(answer))
            if n % 25 == 0:
                client.command("NOOP")
    finally:
        done.set()
        thread.join()
    print(json.dumps(result))


def readers(imaps, pop3s, dovecot, user, password, d_user, d_password, n):
    n = int(n)
    done = threading.Event()
    dovecot_ops = [0]

    def churn():
        client = Client(int(dovecot), False, d_user, d_password)
        client.command("SELECT INBOX")
        while not done.is_set():
            for change in ("+FLAGS (\\Flagged $Label1)", "-FLAGS (\\Flagged $Label1)"):
                client.command(f"STORE 1:* {change}")
                dovecot_ops[0] += 1

    thread = threading.Thread(target=churn)
    thread.start()
    checks, failed = 0, []

    def check(ok, what):
        nonlocal checks
        checks += 1
        if not ok:
            failed.append(what)

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        for _ in range(5):
            pop = poplib.POP3_SSL("127.0.0.1", int(pop3s), context=context, timeout=60)
            pop.user(user)
            pop.pass_(password)
            for i in range(1, n + 1):
                lines = pop.retr(i)[1]
                check(any(l.startswith(b"Subject: message ") for l in lines), f"RETR {i}: {lines[:3]}")
            pop.quit()
        client = Client(int(imaps), True, user, password)
        client.command("SELECT INBOX")
        for _ in range(30):
            answer = client.command("FETCH 1:* (BODY.PEEK[])")
            check(tagged_ok(answer) and answer.count("Subject: message ") == n,
                  f"FETCH: {last_line(answer)}")
        for i in range(1, 6):
            answer = client.command(f"COPY {i} Archive")
            check(tagged_ok(answer), f"COPY: {last_line(answer)}")
        answer = client.command(f"STORE 1:{n // 2} +FLAGS.SILENT (\\Deleted)")
        check(tagged_ok(answer), f"STORE: {last_line(answer)}")
        answer = client.command("EXPUNGE")
        check(tagged_ok(answer) and answer.count(" EXPUNGE\r\n") == n // 2, f"EXPUNGE: {answer}")
        client.command("LOGOUT")
        pop = poplib.POP3_SSL("127.0.0.1", int(pop3s), context=context, timeout=60)
        pop.user(user)
        pop.pass_(password)
        left = n - n // 2
        check(pop.stat()[0] == left, f"STAT {pop.stat()}")
        for i in range(1, left + 1):
            check(pop.dele(i).startswith(b"+OK"), f"DELE {i}")
        check(pop.quit().startswith(b"+OK"), "QUIT")
    finally:
        done.set()
        thread.join()
    print(json.dumps({"checks": checks, "failed": failed, "dovecot_ops": dovecot_ops[0]}))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"run": run, "race": race, "readers": readers}[mode](*args)
