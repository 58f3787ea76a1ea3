"""STARTTLS command injection (CVE-2011-0411 style): STARTTLS and EHLO in one write.
The EHLO was sent in the clear before the handshake and must get no answer over TLS.
Usage: starttls_injection.py PORT. Prints what arrived over TLS before our own EHLO."""
import socket
import ssl
import sys

port = int(sys.argv[1])
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
f = sock.makefile("rb")
assert f.readline().startswith(b"220")
sock.sendall(b"EHLO x\r\n")
while True:
    line = f.readline()
    if line[3:4] == b" ":
        break
sock.sendall(b"STARTTLS\r\nEHLO injected\r\n")
reply = f.readline()
assert reply.startswith(b"220"), reply
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
tls = context.wrap_socket(sock, server_hostname="localhost")
tls.settimeout(1.5)
try:
    early = tls.recv(4096)
except (socket.timeout, TimeoutError):
    early = b""
tls.settimeout(10)
tls.sendall(b"EHLO real\r\n")
answer = tls.recv(4096)
print("early:", early.decode(errors="replace").strip() or "(nothing)")
print("answer:", answer.decode(errors="replace").splitlines()[0])
