"""Pipelined NOOPs, plain or through COMPRESS=DEFLATE (each command sync-flushed, as clients
do), all sent at once. Prints: mode, commands, server CPU seconds, sync-flush blocks received.
Usage: compress_noops.py PORT PID N plain|deflate [each]
With "each", every command goes in a write (a TLS record) of its own, pipelined all the same."""
import socket, ssl, sys, zlib, time
port, pid, n, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
each = len(sys.argv) > 5 and sys.argv[5] == "each"
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=120))
buf = b""
def until(tag):
    global buf
    while (tag + b" ") not in buf:
        buf += s.recv(65536)
    buf = b""
until(b"*")
s.sendall(b"l LOGIN alice@example.test pw-alice\r\n"); until(b"l")
blocks = 0
if mode == "deflate":
    s.sendall(b"z COMPRESS DEFLATE\r\n"); until(b"z")
    c = zlib.compressobj(6, zlib.DEFLATED, -15); d = zlib.decompressobj(-15)
    pieces = [c.compress(b"n%d NOOP\r\n" % i) + c.flush(zlib.Z_SYNC_FLUSH) for i in range(n)]
else:
    pieces = [b"n%d NOOP\r\n" % i for i in range(n)]
import threading
def send():
    if each:
        for p in pieces:
            s.sendall(p)
    else:
        s.sendall(b"".join(pieces))
before = cpu(); t = time.time()
threading.Thread(target=send, daemon=True).start()
last = b"n%d OK" % (n - 1)
got = b""
while last not in got:
    raw = s.recv(65536)
    if not raw: break
    if mode == "deflate":
        blocks += raw.count(b"\x00\x00\xff\xff")
        got += d.decompress(raw)
    else:
        got += raw
    got = got[-200:]
print(mode, "each" if each else "batched", n, "cpu_s=%.2f" % (cpu() - before), "wall_s=%.2f" % (time.time() - t), "sync_blocks=%d" % blocks)
