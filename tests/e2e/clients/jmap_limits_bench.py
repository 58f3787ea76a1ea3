#!/usr/bin/env python3
"""Measures what hostile JMAP requests cost a mailgate binary (for `cargo xtask bench hardening`).

  jmap_limits_bench.py BINARY [SCENARIO...]

For each scenario a fresh gateway is started from BINARY under RLIMIT_AS = 4 GiB (as the e2e
tests do), the request is made, and one JSON line is printed: the scenario, whether the server
survived, its peak resident set (VmHWM, MiB), the CPU seconds it spent on the request
(utime + stime from /proc/PID/stat), the wall seconds until the answer, and the answer (HTTP
status and the first method error or problem, if any).

Scenarios: fanout (32 Core/echo calls each referring twice to the one before), wide (Email/get
of bodyStructure, attachments and textBody of a stored message of 1 000 000 sibling parts),
wide99k (the same of 99 000 parts, under limits.max-mime-parts = 100000),
query250 / query1000 / query10000 (Email/query with one OR of N `body` conditions over 20
messages of ~96 KB),
trickle (a logged-in request body sent at 1 byte/s; capped at 160 s).
Standard library only; needs the plugins of target/ as the tests do (MAILGATE_PLUGIN_DIR).
"""

import base64
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ADDRESS_SPACE = 4 << 30
USER, PASSWORD = "alice@example.test", "pw-alice"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, binary, workdir, extra=""):
        self.binary = binary
        self.dir = workdir
        self.jmap, self.imap, self.smtp, self.metrics = (free_port() for _ in range(4))
        self.config = os.path.join(workdir, "gateway.toml")
        with open(self.config, "w") as f:
            f.write(f"""[server]
hostname = "mx.example.test"
data-dir = "data"

[metrics]
address = "127.0.0.1:{self.metrics}"

[local]
domains = ["example.test"]

[[listener]]
name = "inbound"
address = "127.0.0.1:{self.smtp}"
[[listener]]
name = "imap"
address = "127.0.0.1:{self.imap}"
protocol = "imap"
[[listener]]
name = "jmap"
address = "127.0.0.1:{self.jmap}"
protocol = "jmap"
tls = "implicit"

{extra}
""")
        subprocess.run([binary, "user", "add", USER, "--config", self.config],
                       input=PASSWORD + "\n", text=True, check=True, stderr=subprocess.DEVNULL)
        self.process = None

    def store(self, name, raw):
        maildir = os.path.join(self.dir, "data", "mail", "example.test", "alice")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)
        with open(os.path.join(maildir, "new", name), "wb") as f:
            f.write(raw)

    def start(self):
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
        log = open(os.path.join(self.dir, "server.log"), "wb")
        self.process = subprocess.Popen([self.binary, "serve", "--config", self.config],
                                        stderr=log, preexec_fn=limit)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.jmap), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the JMAP port never opened")

    def alive(self):
        return self.process.poll() is None

    def cpu_seconds(self):
        try:
            fields = open(f"/proc/{self.process.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return None

    def peak_mib(self):
        try:
            for line in open(f"/proc/{self.process.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None

    def stop(self):
        if self.process and self.alive():
            self.process.kill()
        if self.process:
            self.process.wait()


def tls(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=600)
    return context.wrap_socket(raw, server_hostname="localhost")


def auth():
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(l.split(":", 1)[1]) for l in lines[1:]
                   if l.lower().startswith("content-length:")), None)
    while length is not None and len(body) < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), body


def http(gw, method, path, body=b""):
    try:
        sock = tls(gw.jmap)
        kind = "Content-Type: application/json\r\n" if path.startswith("/jmap/api") else ""
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth()}\r\n"
                     f"{kind}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        return read_response(sock)
    except OSError as e:
        return None, str(e).encode()


def api(gw, calls):
    body = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                       "methodCalls": calls}).encode()
    return http(gw, "POST", "/jmap/api/", body)


def account_id():
    return "u" + base64.urlsafe_b64encode(USER.encode()).decode().rstrip("=")


def summary(status, body):
    try:
        parsed = json.loads(body)
    except ValueError:
        return {"status": status, "bytes": len(body)}
    errors = [r[1] for r in parsed.get("methodResponses", []) if r[0] == "error"]
    return {"status": status, "bytes": len(body),
            "error": errors[0] if errors else parsed.get("limit") or parsed.get("type")}


def wide_message(n):
    return (b"From: a@example.test\r\nTo: alice@example.test\r\nSubject: wide\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * n + b"--b--\r\n")


def fanout(gw):
    calls = [["Core/echo", {"seed": "x" * 64}, "c0"]]
    for n in range(1, 32):
        ref = {"resultOf": f"c{n-1}", "name": "Core/echo", "path": ""}
        calls.append(["Core/echo", {"#a": ref, "#b": ref}, f"c{n}"])
    return summary(*api(gw, calls))


def query_ids(gw):
    _, body = api(gw, [["Email/query", {"accountId": account_id()}, "q"]])
    return json.loads(body)["methodResponses"][0][1]["ids"]


def wide(gw):
    """Email/get of the body structure and lists of the stored wide message."""
    ids = query_ids(gw)
    return summary(*api(gw, [["Email/get", {"accountId": account_id(), "ids": ids,
                   "properties": ["bodyStructure", "attachments", "textBody"]}, "g"]]))


def query(n):
    def run(gw):
        query_ids(gw)
        conditions = [{"body": f"w{i}"} for i in range(n)]
        return summary(*api(gw, [["Email/query", {"accountId": account_id(),
                       "filter": {"operator": "OR", "conditions": conditions}}, "q"]]))
    return run


def trickle(gw):
    sock = tls(gw.jmap)
    sock.sendall(f"POST /jmap/api/ HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth()}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode())
    sock.settimeout(1.0)
    started = time.monotonic()
    while time.monotonic() - started < 160:
        try:
            status, _ = read_response(sock)
            return {"status": status, "closed_after": time.monotonic() - started}
        except socket.timeout:
            pass
        except OSError:
            return {"status": None, "closed_after": time.monotonic() - started}
        try:
            sock.sendall(b" ")
        except OSError:
            return {"status": None, "closed_after": time.monotonic() - started}
    return {"status": None, "still_open_after": 160}


def prepare(name, gw):
    if name == "wide":
        gw.store("1700000000.M1P1.wide", wide_message(1_000_000))
    elif name == "wide99k":
        gw.store("1700000000.M1P1.wide", wide_message(99_000))
    elif name.startswith("query"):
        for i in range(20):
            body = "hello world " * 8000  # ~96 KB
            gw.store(f"1700000000.M{i}P3.q", (f"From: a@example.test\r\nSubject: note {i}\r\n"
                                               f"Message-ID: <m{i}@example.test>\r\n\r\n{body}\r\n").encode())


SCENARIOS = {"fanout": fanout, "wide": wide, "wide99k": wide, "query250": query(250), "query1000": query(1000),
             "query10000": query(10000), "trickle": trickle}


def main():
    binary = sys.argv[1]
    names = sys.argv[2:] or list(SCENARIOS)
    for name in names:
        with tempfile.TemporaryDirectory() as workdir:
            # wide99k: a message within the highest MIME parts bound the config takes.
            extra = "[limits]\nmax-mime-parts = 100000\n" if name == "wide99k" else ""
            gw = Gateway(binary, workdir, extra)
            prepare(name, gw)
            gw.start()
            # Sampled meanwhile too: a process that dies takes its VmHWM and CPU with it.
            seen = {"peak": 0.0, "cpu": 0.0}
            done = threading.Event()

            def sample():
                while not done.is_set():
                    peak, cpu = gw.peak_mib(), gw.cpu_seconds()
                    if peak is not None:
                        seen["peak"] = max(seen["peak"], peak)
                    if cpu is not None:
                        seen["cpu"] = max(seen["cpu"], cpu)
                    time.sleep(0.05)
            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                cpu_before = gw.cpu_seconds()
                started = time.monotonic()
                answer = SCENARIOS[name](gw)
                wall = time.monotonic() - started
                alive = gw.alive()
                done.set()
                sampler.join()
                cpu = gw.cpu_seconds() if alive else seen["cpu"]
                peak = gw.peak_mib() if alive else seen["peak"]
                print(json.dumps({
                    "scenario": name, "alive": alive,
                    "peak_mib": round(max(peak or 0, seen["peak"]), 1),
                    "cpu_s": None if cpu is None else round(cpu - cpu_before, 2),
                    "wall_s": round(wall, 2), "answer": answer,
                }), flush=True)
            finally:
                done.set()
                gw.stop()


if __name__ == "__main__":
    main()
