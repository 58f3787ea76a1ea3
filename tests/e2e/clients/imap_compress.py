"""IMAP COMPRESS=DEFLATE (RFC 4978) over implicit TLS, with zlib's raw DEFLATE both ways.
Usage: imap_compress.py PORT USER PASSWORD. Logs in, sends COMPRESS DEFLATE, then (compressed)
SELECT INBOX, FETCH 1 BODY[] and LOGOUT. Prints JSON: the COMPRESS reply, and everything read
after it, inflated, and the compressed byte count read."""
import json
import socket
import ssl
import sys
import zlib

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20))
f = sock.makefile("rb")
f.readline()
sock.sendall(f"l LOGIN {user} {password}\r\n".encode())
while not f.readline().startswith(b"l "):
    pass
sock.sendall(b"c COMPRESS DEFLATE\r\n")
reply = f.readline().decode()
packer = zlib.compressobj(wbits=-15)
unpacker = zlib.decompressobj(wbits=-15)
commands = b"s SELECT INBOX\r\nf FETCH 1 BODY[]\r\nz LOGOUT\r\n"
sock.sendall(packer.compress(commands) + packer.flush(zlib.Z_SYNC_FLUSH))
received, text = 0, b""
data = f.read1(65536) if hasattr(f, "read1") else b""
while data:
    received += len(data)
    text += unpacker.decompress(data)
    if b"z OK" in text:
        break
    data = f.read1(65536)
print(json.dumps({"reply": reply, "after": text.decode("latin-1"), "compressed_bytes": received}))
