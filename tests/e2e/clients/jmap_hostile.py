#!/usr/bin/env python3
"""Hostile JMAP clients for the limit tests (standard library only).

  jmap_hostile.py post PORT USER PASS PATH FILE
      POSTs FILE's bytes to PATH; prints {"status", "seconds", "bytes", "json"}.
  jmap_hostile.py trickle PORT USER|- PASS PATH LENGTH
      Sends the request head at once (credentials unless USER is "-"), announces LENGTH body
      bytes and then sends one a second; prints {"status", "seconds", "sent"} once the server
      answers or closes (status null when it closed without answering).
  jmap_hostile.py trickle-head PORT
      Sends a request head one byte a second; prints {"seconds", "sent", "answer"} once the
      server closes the connection.
"""

import base64
import json
import socket
import ssl
import sys
import time


def connect(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", int(port)), timeout=600)
    return context.wrap_socket(raw, server_hostname="localhost")


def auth(user, password):
    if user == "-":
        return ""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Authorization: Basic {token}\r\n"


def read_response(sock):
    """The status and body of one HTTP/1.1 response (Content-Length framed), or (None, b"")."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while length is not None and len(body) < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    return status, body


def post(port, user, password, path, file):
    body = open(file, "rb").read()
    sock = connect(port)
    started = time.monotonic()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth(user, password)}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    status, answer = read_response(sock)
    seconds = time.monotonic() - started
    try:
        parsed = json.loads(answer)
    except ValueError:
        parsed = None
    print(json.dumps({"status": status, "seconds": seconds, "bytes": len(answer), "json": parsed}))


def trickle(port, user, password, path, length):
    sock = connect(port)
    started = time.monotonic()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth(user, password)}"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode())
    sock.settimeout(1.0)
    sent = 0
    status = None
    while sent < int(length):
        try:
            status, _ = read_response(sock)
            break
        except socket.timeout:
            pass
        try:
            sock.sendall(b" ")
            sent += 1
        except OSError:
            break
    print(json.dumps({"status": status, "seconds": time.monotonic() - started, "sent": sent}))


def trickle_head(port):
    sock = connect(port)
    started = time.monotonic()
    head = b"POST /jmap/api/ HTTP/1.1\r\nHost: localhost\r\n" + b"X-Slow: " + b"a" * 400
    sock.settimeout(1.0)
    sent = 0
    answer = b""
    for byte in head:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        except socket.timeout:
            pass
        except OSError:
            break
        try:
            sock.sendall(bytes([byte]))
            sent += 1
        except OSError:
            break
    print(json.dumps({
        "seconds": time.monotonic() - started,
        "sent": sent,
        "answer": answer.decode("latin-1")[:200],
    }))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "post":
        post(*args)
    elif mode == "trickle":
        trickle(*args)
    elif mode == "trickle-head":
        trickle_head(*args)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
