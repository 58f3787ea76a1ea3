"""Sends the same raw IMAP commands to one server with Python's imaplib and prints what came back.
Usage: imap_peers.py mailgate PORT USER PASSWORD < COMMANDS_JSON   (implicit TLS, LOGIN)
       imap_peers.py dovecot CONFIG < COMMANDS_JSON                 (Dovecot's imap on a pipe, PREAUTH)
COMMANDS_JSON is a list of commands (latin-1 text with their tag first, LITERAL+ literals
included, without the final CRLF). Each is sent with a CRLF, and everything up to its tagged
reply is read (literals whole). Prints one JSON list: per command, the lines read (latin-1 text)."""
import imaplib
import json
import ssl
import sys

mode, commands = sys.argv[1], json.load(sys.stdin)
if mode == "mailgate":
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed test certificate
    imap = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=context)
    imap.login(sys.argv[3], sys.argv[4])
else:
    # Dovecot's imap process on a pipe: a PREAUTH session as the user of its config.
    imap = imaplib.IMAP4_stream(
        "env USER=nobody HOME=/nonexistent /usr/lib/dovecot/imap -c " + sys.argv[2]
    )


def reply(tag):
    """The lines up to the tagged one, each literal read whole into its line."""
    got = []
    while True:
        line = imap.readline()
        if not line:
            got.append("<closed>")
            return got
        text = line
        while text.rstrip(b"\r\n").endswith(b"}") and b"{" in text:
            size = int(text.rstrip(b"\r\n").rsplit(b"{", 1)[1][:-1].rstrip(b"+"))
            text += imap.read(size)
            more = imap.readline()
            text += more
            line = more
        got.append(text.decode("latin-1").rstrip("\r\n"))
        if text.startswith(tag.encode() + b" "):
            return got


out = []
for command in commands:
    imap.send(command.encode("latin-1") + b"\r\n")
    out.append(reply(command.split(" ", 1)[0]))
print(json.dumps(out))
