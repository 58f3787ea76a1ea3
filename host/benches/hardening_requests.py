#!/usr/bin/env python3
"""Per-request cost of each hostile request of the hardening review: for every scenario a fresh
`mailgate serve` (under RLIMIT_AS = 4 GiB, so an unbounded allocation aborts it rather than
eating the machine), then the attack with a client deadline, and one table row with the wall
time, the server CPU seconds the attack cost, the server's peak memory (VmHWM; before the attack,
after its setup, and at the end), the first line of the answer, whether the server survived,
and the slowest answer another client got meanwhile (a fresh SMTP connection's greeting and a
NOOP on a logged-in IMAP connection, every 100 ms).

Usage: hardening_requests.py [BIN [SCRATCH]]
  BIN      the mailgate binary (default target/release/mailgate; env BIN overrides, so the same
           script measures an older build)
  SCRATCH  a directory for the per-scenario servers (default target/bench-runs/requests-<time>)
  env ONLY=1,3a,7   run only these scenarios; TIMEOUT=120 the client deadline in seconds.
Standard library only. Results are also appended to SCRATCH/results.tsv.
"""
import base64
import binascii
import json
import os
import re
import resource
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOMAIN = "example.test"
USER, PASSWORD = f"alice@{DOMAIN}", "pw-alice"
ADDRESS_SPACE = 4 << 30
TIMEOUT = float(os.environ.get("TIMEOUT", "120"))
PROBE_TIMEOUT = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE


def free_ports(n):
    """`n` distinct free ports (all held open while choosing, so none is chosen twice)."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


# ---------------------------------------------------------------------------------------------
# The server under test


class Server:
    """One gateway with SMTP inbound, IMAP (STARTTLS and implicit TLS), POP3, JMAP and a milter
    listener, user alice, and its own data dir."""

    def __init__(self, binary, directory, limits=""):
        self.binary, self.dir = binary, directory
        os.makedirs(directory, exist_ok=True)
        names = ("smtp", "imap", "imaps", "pop3", "jmap", "milter")
        self.port = dict(zip(names, free_ports(len(names))))
        p = self.port
        self.config = os.path.join(directory, "gateway.toml")
        with open(self.config, "w") as f:
            f.write(f"""[server]
hostname = "mx.{DOMAIN}"
data-dir = "data"
[metrics]
address = ""
[local]
domains = ["{DOMAIN}"]
[limits]
max-connections-per-ip = 400
auth-failures-per-ip = 0
{limits}
[[listener]]
name = "inbound"
address = "127.0.0.1:{p['smtp']}"
[[listener]]
name = "imap"
address = "127.0.0.1:{p['imap']}"
protocol = "imap"
[[listener]]
name = "imaps"
address = "127.0.0.1:{p['imaps']}"
protocol = "imap"
tls = "implicit"
[[listener]]
name = "pop3"
address = "127.0.0.1:{p['pop3']}"
protocol = "pop3"
[[listener]]
name = "jmap"
address = "127.0.0.1:{p['jmap']}"
protocol = "jmap"
tls = "implicit"
[[listener]]
name = "milter"
address = "127.0.0.1:{p['milter']}"
protocol = "milter"
""")
        subprocess.run([binary, "user", "add", USER, "--config", self.config],
                       input=f"{PASSWORD}\n", text=True, check=True, stderr=subprocess.DEVNULL)
        self.maildir = os.path.join(directory, "data", "mail", DOMAIN, USER.split("@")[0])
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.maildir, sub), exist_ok=True)
        self.proc, self.rusage, self.lock = None, None, threading.Lock()
        self._stored = 0

    def store(self, raw, folder=""):
        """Puts a message straight into the Maildir (`folder`: a Maildir++ subfolder)."""
        base = os.path.join(self.maildir, folder) if folder else self.maildir
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        self._stored += 1
        name = f"{1700000000 + self._stored}.M{self._stored}P1.bench:2,S"
        with open(os.path.join(base, "cur", name), "wb") as f:
            f.write(raw)

    def start(self):
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
        log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen([self.binary, "serve", "--config", self.config],
                                     stderr=log, stdout=subprocess.DEVNULL, preexec_fn=limit,
                                     env={**os.environ, "MAILGATE_LOG": "info"})
        deadline = time.monotonic() + 60
        for port in self.port.values():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or not self.alive():
                        raise RuntimeError(f"port {port} never opened; see {self.dir}/server.log")
                    time.sleep(0.05)

    def alive(self):
        with self.lock:  # the probe thread asks too; only one of them may reap the process
            if self.rusage is not None:
                return False
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid == 0:
                return True
            self.rusage, self.exit_status = usage, status
            return False

    def cpu(self):
        """utime + stime in seconds, from /proc while it runs, else from the reaped rusage."""
        if self.alive():
            try:
                with open(f"/proc/{self.proc.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / CLK_TCK
            except (OSError, IndexError):
                pass
        self.alive()
        return self.rusage.ru_utime + self.rusage.ru_stime if self.rusage else 0.0

    def hwm_mib(self):
        """VmHWM while it runs, else the reaped ru_maxrss (the same high-water mark)."""
        if self.alive():
            try:
                with open(f"/proc/{self.proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) / 1024
            except OSError:
                pass
        self.alive()
        return self.rusage.ru_maxrss / 1024 if self.rusage else 0.0

    def stop(self):
        if self.proc and self.alive():
            self.proc.kill()
            with self.lock:
                _, self.exit_status, self.rusage = os.wait4(self.proc.pid, 0)

    def died_how(self):
        if self.rusage is None:
            return "alive"
        if os.WIFSIGNALED(self.exit_status):
            return f"DIED sig{os.WTERMSIG(self.exit_status)}"
        return f"DIED exit{os.WEXITSTATUS(self.exit_status)}"


# ---------------------------------------------------------------------------------------------
# Clients


class Deadline(Exception):
    pass


class Lines:
    """A line reader over a socket with an overall deadline; literals can be skipped."""

    def __init__(self, sock, deadline):
        self.sock, self.deadline, self.buf, self.received = sock, deadline, bytearray(), 0

    def _more(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Deadline()
        self.sock.settimeout(min(left, 5.0))
        try:
            chunk = self.sock.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            return
        if not chunk:
            raise ConnectionError("closed by the server")
        self.received += len(chunk)
        self.buf += chunk

    def line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                out = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return out
            self._more()

    def skip(self, n):
        while n > 0:
            if not self.buf:
                self._more()
            take = min(n, len(self.buf))
            del self.buf[:take]
            n -= take


def text(line):
    return " ".join(line.decode("utf-8", "replace").split("\r\n")).strip()


def literal_size(line):
    if line.endswith(b"}\r\n"):
        start = line.rfind(b"{")
        try:
            return int(line[start + 1:-3].rstrip(b"+"))
        except ValueError:
            return None
    return None


class Imap:
    """A raw IMAP client (IMAP's literals in answers are skipped, not kept)."""

    def __init__(self, port, tls=True, deadline=None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = TLS.wrap_socket(sock) if tls else sock
        self.reader = Lines(self.sock, deadline or time.monotonic() + 60)
        self.greeting = text(self.reader.line())
        self.n = 0

    def command(self, line, deadline=None):
        """Sends one command; returns (tagged status line, first untagged line, untagged count)."""
        self.n += 1
        tag = f"a{self.n}"
        if deadline:
            self.reader.deadline = deadline
        self.sock.sendall(f"{tag} {line}\r\n".encode())
        first, untagged = None, 0
        while True:
            got = self.reader.line()
            while (size := literal_size(got)) is not None:
                self.reader.skip(size)
                got = got + b"..." + self.reader.line()
            if got.startswith(tag.encode() + b" "):
                return text(got)[len(tag) + 1:], first, untagged
            untagged += 1
            if first is None:
                first = text(got)[:120]

    def login(self):
        status, _, _ = self.command(f"LOGIN {USER} {PASSWORD}")
        assert status.startswith("OK"), status
        status, _, _ = self.command("SELECT INBOX", deadline=time.monotonic() + 600)
        assert status.startswith("OK"), status
        return self

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def jmap(port, body, timeout):
    """POSTs a JMAP request; returns (answer summary, bytes of the response)."""
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/jmap/api", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=TLS, timeout=timeout) as answer:
            status, raw = answer.status, read_capped(answer)
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    size = raw[1] if isinstance(raw, tuple) else len(raw)
    return f"HTTP {status} " + summarize_jmap(raw), size


def read_capped(answer, cap=64 << 20):
    """The response body, or past `cap` bytes its first 64 KiB and its size."""
    head, total = bytearray(), 0
    while chunk := answer.read(1 << 20):
        total += len(chunk)
        if len(head) < cap:
            head += chunk
    return bytes(head) if total <= cap else (bytes(head[:65536]), total)


def summarize_jmap(raw):
    if isinstance(raw, tuple):  # too large to parse here: its first method's name and size
        head, total = raw
        match = re.search(rb'"methodResponses":\[\["([^"]+)"', head)
        return f"{match.group(1).decode() if match else '?'} ({total >> 20} MiB, not parsed)"
    try:
        value = json.loads(raw)
    except ValueError:
        return f"({len(raw)} bytes) " + raw[:80].decode("utf-8", "replace")
    if "methodResponses" not in value:
        return str(value.get("type", "")).rsplit(":", 1)[-1] + " " + str(value.get("limit", ""))
    responses = value["methodResponses"]
    errors = [(k, a) for k, (name, a, _) in enumerate(responses) if name == "error"]
    if errors:  # the first error says why; those after it usually follow from it
        k, arguments = errors[0]
        return (f"{len(responses)} responses, {len(errors)} errors, first at call {k}: "
                f"{arguments.get('type')} {arguments.get('limit', '')} "
                f"{arguments.get('description', '')}")[:160]
    name, arguments, _ = responses[-1]
    if isinstance(arguments.get("list"), list):
        name += f" ({len(arguments['list'])} found, notFound {len(arguments.get('notFound') or [])})"
    elif isinstance(arguments.get("ids"), list):
        name += f" ({len(arguments['ids'])} ids)"
    return f"{len(responses)} responses, last: {name}"


def jmap_session(port):
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(f"https://127.0.0.1:{port}/.well-known/jmap",
                                     headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, context=TLS, timeout=60) as answer:
        session = json.loads(answer.read())
    return session["primaryAccounts"]["urn:ietf:params:jmap:mail"]


USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


# ---------------------------------------------------------------------------------------------
# Another client meanwhile


class Probe:
    """Every 100 ms: a fresh SMTP connection's greeting, and NOOP on a logged-in IMAP
    connection; keeps the slowest of each. A probe that failed (connection refused or closed,
    or no answer within 30 s) is shown as `fail` or `>30000`."""

    def __init__(self, server):
        self.server, self.stop_flag = server, threading.Event()
        self.smtp, self.noop, self.count = 0.0, 0.0, 0
        self.smtp_failed, self.noop_failed = None, None
        self.imap = Imap(server.port["imaps"]).login()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                t0 = time.monotonic()
                with socket.create_connection(("127.0.0.1", self.server.port["smtp"]),
                                              timeout=PROBE_TIMEOUT) as c:
                    if not c.recv(512):
                        raise ConnectionError("closed")
                self.smtp = max(self.smtp, time.monotonic() - t0)
            except (socket.timeout, TimeoutError):
                self.smtp_failed = f">{PROBE_TIMEOUT * 1000:.0f}"
            except OSError:
                self.smtp_failed = self.smtp_failed or "fail"
            if self.imap:
                try:
                    t0 = time.monotonic()
                    self.imap.command("NOOP", time.monotonic() + PROBE_TIMEOUT)
                    self.noop = max(self.noop, time.monotonic() - t0)
                except Deadline:
                    self.noop_failed, self.imap = f">{PROBE_TIMEOUT * 1000:.0f}", None
                except OSError:
                    self.noop_failed, self.imap = "fail", None
            self.count += 1
            if self.smtp_failed and not self.server.alive():
                return
            self.stop_flag.wait(0.1)

    def finish(self):
        self.stop_flag.set()
        self.thread.join(PROBE_TIMEOUT * 2 + 5)
        if self.imap:
            self.imap.close()
        smtp = f"{self.smtp * 1000:.0f}" + (f" {self.smtp_failed}" if self.smtp_failed else "")
        noop = f"{self.noop * 1000:.0f}" + (f" {self.noop_failed}" if self.noop_failed else "")
        return smtp, noop


# ---------------------------------------------------------------------------------------------
# Messages


def plain(i, body="", extra=""):
    return (f"From: Sender {i % 97} <sender{i % 97}@example.com>\r\nTo: {USER}\r\n"
            f"Subject: message {i}\r\nMessage-ID: <{i}@example.com>\r\n{extra}"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n{body}").encode()


def nested_qp(levels, target_bytes):
    """`levels` of message/rfc822 in quoted-printable, each escaping the `=` of the one below
    (the innermost is lines of `=`); scaled so the whole is about `target_bytes`. Lines stay
    under 76 bytes."""
    def build(lines):
        message = b"Subject: core\r\n\r\n" + (b"=" * 20 + b"\r\n") * lines
        for _ in range(levels):
            message = (b"Content-Type: message/rfc822\r\n"
                       b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                       + binascii.b2a_qp(message))
        return message
    per_line = len(build(2)) - len(build(1))
    body = build(max(1, target_bytes // per_line))
    return (f"From: <attacker@example.com>\r\nTo: {USER}\r\nSubject: nested\r\n"
            f"Message-ID: <nested@example.com>\r\nMIME-Version: 1.0\r\n").encode() + body


def many_parts(parts):
    """One multipart/mixed with `parts` tiny sibling parts (about 10 bytes each)."""
    head = (f"From: <attacker@example.com>\r\nTo: {USER}\r\nSubject: parts\r\n"
            "Message-ID: <parts@example.com>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n").encode()
    return head + b"\r\n--b\r\n\r\nx" * parts + b"\r\n--b--\r\n"


# ---------------------------------------------------------------------------------------------
# The scenarios: each is (id, title, limits, setup(server) -> state, attack(server, state,
# deadline) -> answer text). Setup runs before the CPU and memory baselines.


def store_many(server, n, body_of=lambda i: "", extra_of=lambda i: ""):
    for i in range(n):
        server.store(plain(i, body_of(i), extra_of(i)))


def imap_session(server):
    return Imap(server.port["imaps"], deadline=time.monotonic() + 600).login()


def imap_attack(command):
    def attack(server, imap, deadline):
        status, first, untagged = imap.command(command(), deadline)
        return f"{status[:70]} | {untagged} untagged, {imap.reader.received >> 20} MiB read" + (
            f" | first: {first[:50]}" if first else "")
    return attack


def s1_setup(server):
    line = b"x" * 76 + b"\r\n"
    server.store(plain(1) + line * (2_000_000 // len(line)))
    return imap_session(server)


def s2_attack(server, _, deadline):
    calls = [["Core/echo", {"seed": "x" * 64}, "c0"]]
    for i in range(1, 32):
        ref = {"resultOf": f"c{i - 1}", "name": "Core/echo", "path": ""}
        calls.append(["Core/echo", {"#a": ref, "#b": ref}, f"c{i}"])
    answer, size = jmap(server.port["jmap"], {"using": USING, "methodCalls": calls},
                        deadline - time.monotonic())
    return f"{answer} | {size} bytes"


def s3_setup(server):
    store_many(server, 10_000)
    imap = imap_session(server)
    status, first, _ = imap.command("SEARCH RETURN (SAVE) ALL")
    assert status.startswith("OK"), status
    return imap


def s4_setup_jmap(server):
    server.store(many_parts(1_000_000))
    account = jmap_session(server.port["jmap"])
    answer = jmap_post_value(server, {"using": USING, "methodCalls": [
        ["Email/query", {"accountId": account}, "q"]]}, 600)
    ids = answer["methodResponses"][0][1]["ids"]
    return account, ids


def jmap_post_value(server, body, timeout):
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.port['jmap']}/jmap/api", data=json.dumps(body).encode(),
        method="POST", headers={"Authorization": f"Basic {auth}",
                                "Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=TLS, timeout=timeout) as answer:
        return json.loads(answer.read())


def s4_attack_jmap(server, state, deadline):
    account, ids = state
    answer, size = jmap(server.port["jmap"], {"using": USING, "methodCalls": [
        ["Email/get", {"accountId": account, "ids": ids,
                       "properties": ["bodyStructure"]}, "g"]]}, deadline - time.monotonic())
    return f"{answer} | {size} bytes"


def s4_setup_imap(server):
    server.store(many_parts(1_000_000))
    return imap_session(server)


NESTED = {}


def nested_message():
    if "m" not in NESTED:
        NESTED["m"] = nested_qp(48, 21_000_000)
    return NESTED["m"]


def s5_attack(server, _, deadline):
    message = nested_message()
    stuffed = b"\r\n".join(b"." + l if l.startswith(b".") else l for l in message.split(b"\r\n"))
    answers = [None] * 3

    def send(k):
        try:
            with socket.create_connection(("127.0.0.1", server.port["smtp"]), timeout=30) as c:
                lines = Lines(c, deadline)
                lines.line()
                c.sendall(b"EHLO attacker.example\r\n")
                while (l := lines.line())[3:4] == b"-":
                    pass
                for command in (b"MAIL FROM:<attacker@example.com>", f"RCPT TO:<{USER}>".encode(),
                                b"DATA"):
                    c.sendall(command + b"\r\n")
                    reply = lines.line()
                    if reply[:1] not in (b"2", b"3"):
                        answers[k] = text(reply)
                        return
                c.sendall(stuffed)
                c.sendall(b"\r\n.\r\n" if not stuffed.endswith(b"\r\n") else b".\r\n")
                answers[k] = text(lines.line())
        except Deadline:
            answers[k] = "client deadline"
        except OSError as e:
            answers[k] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=send, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return f"{len(message) >> 20} MiB each: " + " / ".join(a[:60] for a in answers)


def prelogin_attack(protocol):
    def attack(server, _, deadline):
        cap = 40.0
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port[protocol]), timeout=10) as c:
            c.recv(512)
            n = 0
            while time.monotonic() - t0 < cap:
                n += 1
                try:
                    c.sendall(b"a%d NOOP\r\n" % n if protocol == "imap" else b"NOOP\r\n")
                    c.settimeout(8)
                    end = time.monotonic() + 8
                    while time.monotonic() < end:
                        got = c.recv(4096)
                        if not got:
                            return f"closed by the server after {time.monotonic() - t0:.1f} s"
                        c.settimeout(max(0.01, end - time.monotonic()))
                except (socket.timeout, TimeoutError):
                    continue
                except OSError as e:
                    return f"{type(e).__name__} after {time.monotonic() - t0:.1f} s"
            return f"still open after {cap:.0f} s (cap)"
    return attack


def milter_packet(command, data):
    return struct.pack(">I", len(data) + 1) + command + data


def s7_attack(server, _, deadline):
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port["milter"]), timeout=30) as c:
        c.sendall(milter_packet(b"O", struct.pack(">III", 6, 0x1FF, 0)))
        head = c.recv(4)
        if len(head) < 4:
            return "no negotiation answer"
        length = struct.unpack(">I", head)[0]
        c.recv(length)
        value = b"v" * (512 * 1024 - 32)
        try:
            for i in range(256):
                c.sendall(milter_packet(b"D", b"C" + b"{macro%d}\0" % i + value + b"\0"))
                sent += 1
            connect = b"client.example\0" + b"4" + struct.pack(">H", 25) + b"192.0.2.1\0"
            c.sendall(milter_packet(b"C", connect))
            c.settimeout(max(1.0, deadline - time.monotonic()))
            head = c.recv(5)
        except OSError as e:
            return f"{type(e).__name__} after {sent * 512 // 1024} MiB of macros"
        if len(head) < 5:
            return f"closed by the server after {sent * 512 // 1024} MiB of macros"
        return f"{sent * 512 // 1024} MiB of macros sent; CONNECT answered {head[4:5]!r}"


def s8_setup(server):
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    body = lambda i: " ".join(words[(i + k) % 8] for k in range(400)) + f"\r\nitem{i}\r\n"
    store_many(server, 2000, body)
    return jmap_session(server.port["jmap"])


def s8_attack(server, account, deadline):
    conditions = [{"body": f"absent{k}"} for k in range(1000)]
    answer, size = jmap(server.port["jmap"], {"using": USING, "methodCalls": [
        ["Email/query", {"accountId": account, "filter": {
            "operator": "OR", "conditions": conditions}}, "q"]]}, deadline - time.monotonic())
    return answer


def s9_setup(server):
    store_many(server, 100, extra_of=lambda i: f"References: <{i - 1}@example.com>\r\n" if i else "")
    references = "\r\n ".join(f"<r{k}@a.test>" for k in range(200_000))
    server.store(plain(100, "x\r\n", f"References: {references}\r\n"))
    return imap_session(server)


def s10a_setup(server):
    server.store(plain(1))
    for name in ("Sent", "Drafts", "a" * 200, "a" * 100 + "." + "a" * 100, "a" * 50 + "b" * 100):
        server.store(plain(2), folder="." + name)
    return imap_session(server)


def s10b_setup(server):
    server.store(nested_message())
    return imap_session(server)


def s10b_attack(server, imap, deadline):
    times = []
    for _ in range(2):
        t0 = time.monotonic()
        status, first, _ = imap.command("FETCH 1 BODY[]", deadline)
        times.append(f"{time.monotonic() - t0:.2f} s")
    return f"{status[:50]} | the two FETCHes: {', '.join(times)}"


LIST_PATTERN = ("*a%a" * 15000)[:59998] + "*z"

SCENARIOS = [
    ("1", "IMAP FETCH 5000x BODY.PEEK[] of 2 MB", "", s1_setup,
     imap_attack(lambda: "FETCH 1 (" + " ".join(["BODY.PEEK[]"] * 5000) + ")")),
    ("2", "JMAP 32 Core/echo, each refs prev x2", "", lambda s: jmap_session(s.port["jmap"]),
     s2_attack),
    ("3a", "IMAP SEARCH 1000x $ (10000 msgs)", "", s3_setup,
     imap_attack(lambda: "SEARCH " + " ".join(["$"] * 1000))),
    ("3b", "IMAP SEARCH 30000x $ (10000 msgs)", "", s3_setup,
     imap_attack(lambda: "SEARCH " + " ".join(["$"] * 30000))),
    ("4a", "JMAP Email/get bodyStructure 1M parts", "", s4_setup_jmap, s4_attack_jmap),
    ("4b", "IMAP FETCH BODY.PEEK[1..4000] 1M parts", "", s4_setup_imap,
     imap_attack(lambda: "FETCH 1 (" + " ".join(f"BODY.PEEK[{k}]" for k in range(1, 4001)) + ")")),
    ("5", "SMTP 3x DATA 21 MB, 48 nested QP", "max-message-bytes = 25000000", lambda s: None,
     s5_attack),
    ("6a", "IMAP pre-login NOOP/8s, login-timeout 10", "login-timeout-secs = 10",
     lambda s: None, prelogin_attack("imap")),
    ("6b", "POP3 pre-login NOOP/8s, login-timeout 10", "login-timeout-secs = 10",
     lambda s: None, prelogin_attack("pop3")),
    ("7", "milter 128 MiB of macros, 512 KiB each", "", lambda s: None, s7_attack),
    ("8", "JMAP Email/query OR of 1000 body (2000)", "", s8_setup, s8_attack),
    ("9", "IMAP THREAD, References of 200000 ids", "", s9_setup,
     imap_attack(lambda: "THREAD REFERENCES UTF-8 ALL")),
    ("10a", "IMAP LIST 60000-char * % pattern", "", s10a_setup,
     imap_attack(lambda: f'LIST "" "{LIST_PATTERN}"')),
    ("10b", "IMAP FETCH BODY[] x2, 48 nested QP", "", s10b_setup, s10b_attack),
]


# ---------------------------------------------------------------------------------------------


def run(binary, scratch, scenario):
    ident, title, limits, setup, attack = scenario
    server = Server(binary, os.path.join(scratch, f"s{ident}"), limits)
    state = None
    try:
        server.start()
        state = setup(server)
        probe = Probe(server)
        hwm0, cpu0, t0 = server.hwm_mib(), server.cpu(), time.monotonic()
        try:
            answer = attack(server, state, t0 + TIMEOUT)
        except (Deadline, TimeoutError, socket.timeout):
            answer = f"client deadline ({TIMEOUT:.0f} s)"
        except (OSError, AssertionError) as e:
            answer = f"{type(e).__name__}: {e}"[:100]
        wall = time.monotonic() - t0
        time.sleep(0.3)
        cpu, hwm = server.cpu() - cpu0, server.hwm_mib()
        smtp, noop = probe.finish()
        alive = server.died_how()
    finally:
        if isinstance(state, Imap):
            state.close()
        server.stop()
    return [ident, title, f"{wall:.2f}", f"{cpu:.2f}", f"{hwm0:.0f}", f"{hwm:.0f}", alive, smtp,
            noop, answer.replace("\t", " ")]


HEADER = ["#", "attack", "wall s", "srv CPU s", "MiB before", "MiB peak", "server",
          "slowest SMTP greet ms", "slowest NOOP ms", "answer"]
WIDTHS = [4, 42, 7, 9, 10, 8, 10, 8, 8, 0]


def show(row):
    cells = [str(c).ljust(w) if w else str(c) for c, w in zip(row, WIDTHS)]
    print(" ".join(cells), flush=True)


def main():
    args = sys.argv[1:]
    binary = os.environ.get("BIN") or (args[0] if args else
                                       os.path.join(ROOT, "target/release/mailgate"))
    binary = os.path.abspath(binary)
    scratch = os.path.abspath(args[1] if len(args) > 1 else os.path.join(
        ROOT, "target/bench-runs", "requests-" + time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(scratch, exist_ok=True)
    only = set(filter(None, os.environ.get("ONLY", "").split(",")))
    print(f"hostile requests against {binary} (client deadline {TIMEOUT:.0f} s, "
          f"RLIMIT_AS {ADDRESS_SPACE >> 30} GiB, runs in {scratch})", flush=True)
    show(HEADER)
    with open(os.path.join(scratch, "results.tsv"), "a") as out:
        out.write("\t".join(HEADER) + "\n")
        for scenario in SCENARIOS:
            if only and scenario[0] not in only:
                continue
            try:
                row = run(binary, scratch, scenario)
            except Exception as e:  # a broken setup must not hide the other rows
                row = [scenario[0], scenario[1]] + ["-"] * 7 + [f"setup failed: {e}"[:100]]
            show(row)
            out.write("\t".join(map(str, row)) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
