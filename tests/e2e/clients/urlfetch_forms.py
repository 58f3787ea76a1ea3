"""URLFETCH's extended forms (RFC 5524) of one message, as one IMAP server answers them.

usage: urlfetch_forms.py PORT TLS(0|1) USER PASSWORD URL_USER MAILBOX

Creates MAILBOX, appends a message (a quoted-printable text, a base64 attachment with every
byte value, a message/rfc822 part holding a base64 text), authorizes a URL of each section
with GENURLAUTH and fetches it in every extended form. Prints a JSON list of
[section, parameters, response], the URL itself replaced by "URL" and the tagged reply by
<OK>/<NO>/<BAD>, so that two servers' answers can be compared byte for byte.
"""
import base64
import json
import re
import socket
import ssl
import sys

port, tls = int(sys.argv[1]), sys.argv[2] == '1'
user, password, url_user, mailbox = sys.argv[3:7]

sock = socket.create_connection(('127.0.0.1', port), timeout=30)
if tls:
    sock = ssl._create_unverified_context().wrap_socket(sock)
reader = sock.makefile('rb')
reader.readline()
counter = [0]


def response(tag):
    """Every line up to the tagged one, literals included."""
    out = b''
    while True:
        line = reader.readline()
        if not line:
            raise SystemExit('the server closed the connection')
        out += line
        size = re.search(rb'~?\{(\d+)\}\r\n$', line)
        if size:
            out += reader.read(int(size.group(1)))
        elif line.startswith(tag.encode() + b' '):
            return out


def command(text, literal=None):
    counter[0] += 1
    tag = 't%d' % counter[0]
    if literal is None:
        sock.sendall(('%s %s\r\n' % (tag, text)).encode())
    else:
        head = '%s %s {%d+}\r\n' % (tag, text, len(literal))
        sock.sendall(head.encode() + literal + b'\r\n')
    return response(tag)


attachment = bytes((i * 7) % 256 for i in range(300))
encoded = base64.encodebytes(attachment).replace(b'\n', b'\r\n')
message = (
    b'Subject: parts\r\nMIME-Version: 1.0\r\n'
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b'--b\r\nContent-Type: text/plain; charset=utf-8\r\n'
    b'Content-Transfer-Encoding: quoted-printable\r\n\r\n'
    b'Gr=C3=BC=C3=9Fe aus M=C3=BCnchen, a soft =\r\nbreak and a tab=09.\r\n'
    b'--b\r\nContent-Type: application/octet-stream; name="blob.bin"\r\n'
    b'Content-Transfer-Encoding: base64\r\n\r\n' + encoded +
    b'--b\r\nContent-Type: message/rfc822\r\n\r\n'
    b'Subject: inner\r\nContent-Type: text/plain\r\n'
    b'Content-Transfer-Encoding: base64\r\n\r\naW5uZXIgdGV4dA==\r\n'
    b'--b--\r\n')

command('LOGIN "%s" "%s"' % (user, password))
command('CREATE %s' % mailbox)
command('APPEND %s' % mailbox, message)
command('SELECT %s' % mailbox)
answers = []
for section in ['', '/;SECTION=1', '/;SECTION=2', '/;SECTION=2/;PARTIAL=10.20',
                '/;SECTION=3', '/;SECTION=3.1', '/;SECTION=1.MIME', '/;SECTION=TEXT']:
    rump = 'imap://%s@example.test/%s/;UID=1%s;URLAUTH=user+%s' % (
        url_user, mailbox, section, user)
    made = command('GENURLAUTH "%s" INTERNAL' % rump)
    found = re.search(rb'GENURLAUTH "?([^" \r\n]+)"?', made)
    if not found:
        raise SystemExit('GENURLAUTH failed: %r' % made)
    url = found.group(1).decode()
    for parameters in ['BINARY', 'BODYPARTSTRUCTURE BINARY', 'BINARY BODYPARTSTRUCTURE',
                       'BODY BODYPARTSTRUCTURE', 'BODYPARTSTRUCTURE', '']:
        got = command('URLFETCH ("%s"%s)' % (url, ' ' + parameters if parameters else ''))
        got = got.replace(b'"' + url.encode() + b'"', b'URL').replace(url.encode(), b'URL')
        got = re.sub(rb't\d+ (OK|NO|BAD)[^\r\n]*\r\n$', lambda m: b'<' + m.group(1) + b'>', got)
        answers.append([section, parameters, got.decode('latin-1')])
command('LOGOUT')
print(json.dumps(answers))
