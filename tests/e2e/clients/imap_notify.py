"""IMAP NOTIFY (RFC 5465) as a client sees it, with Python's imaplib (and smtplib to deliver).
Usage: imap_notify.py SCENARIO IMAPS_PORT SMTP_PORT USER PASSWORD
(IMAPS_PORT as `plain:PORT` for IMAP without TLS, as a Dovecot under test serves it)
Prints one JSON object: what the watching session received, step by step. Unsolicited lines
are read from the socket with no command outstanding (between commands, or during IDLE).
Scenarios:
  events     NOTIFY SET STATUS for the selected mailbox (MessageNew with FETCH attributes,
             MessageExpunge, FlagChange) and another one; a delivery by SMTP, an APPEND and an
             expunge and a flag change from a second session; the same during IDLE; NOTIFY NONE;
             refusals (BADEVENT, BAD).
  names      MailboxName and SubscriptionChange for mailboxes made, subscribed, removed by a
             second session.
  delayed    SELECTED-DELAYED: an expunge waits for NOOP, a new message does not.
  overflow   a client that stops reading while many large messages arrive: it is told
             NOTIFICATIONOVERFLOW, stays connected, and gets no more notifications."""
import imaplib
import json
import smtplib
import socket
import ssl
import sys
import time

scenario, port, smtp_port, user, password = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
plain = port.startswith("plain:")
port = int(port.removeprefix("plain:"))
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed test certificate
out = {}


def session():
    if plain:
        imap = imaplib.IMAP4("127.0.0.1", port)
    else:
        imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context)
    imap.login(user, password)
    return imap


class Reader:
    """Lines from a TLS socket, read with recv (a timeout leaves the socket usable, unlike
    imaplib's buffered file)."""

    def __init__(self, sock):
        self.sock, self.pending = sock, b""

    def line(self, seconds=60):
        """One line without CRLF (a literal's bytes appended to it); None on timeout or close."""
        deadline = time.monotonic() + seconds
        while b"\r\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return None
            if not chunk:
                return None
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        text = line.decode("latin-1")
        if text.endswith("}") and "{" in text:
            size = int(text[text.rindex("{") + 1:-1])
            while len(self.pending) < size:
                self.sock.settimeout(seconds)
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None
                self.pending += chunk
            literal, self.pending = self.pending[:size], self.pending[size:]
            rest = self.line(seconds) or ""
            text += literal.decode("latin-1") + rest
        return text


readers = {}


def reader(imap):
    return readers.setdefault(id(imap), Reader(imap.sock))


def command(imap, text):
    """Sends `tag text` (imaplib's tags) and reads up to its tagged line:
    (untagged lines, tagged line)."""
    tag = imap._new_tag().decode()
    imap.send(f"{tag} {text}\r\n".encode())
    lines = []
    while True:
        line = reader(imap).line()
        if line is None or line.startswith(tag + " "):
            return lines, line
        lines.append(line)


def unsolicited(imap, until, seconds=15):
    """Lines arriving with no command outstanding, until one contains every word of `until`
    (or `seconds` pass: then what came)."""
    got = []
    deadline = time.monotonic() + seconds
    while True:
        line = reader(imap).line(max(0.0, deadline - time.monotonic()))
        if line is None:
            return got
        got.append(line)
        if until and all(w in line for w in until):
            return got


def close(*sessions):
    for imap in sessions:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def deliver(subject, size=0):
    body = f"Subject: {subject}\r\nFrom: sender@example.org\r\nTo: {user}\r\n\r\nhello\r\n" + "x" * size
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        smtp.sendmail("sender@example.org", [user], body)


def wait_for_messages(imap, mailbox, count, seconds=30):
    """Polls STATUS until `mailbox` holds `count` messages: an SMTP 250 means queued, and local
    delivery follows on its own."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        typ, data = imap.status(mailbox, "(MESSAGES)")
        if typ == "OK" and f"MESSAGES {count})".encode() in data[0]:
            return
        time.sleep(0.05)
    raise SystemExit(f"{mailbox} did not reach {count} messages in {seconds} s")


def events():
    watcher, other = session(), session()
    other.create("Lists")
    watcher.select("INBOX")
    out["set"] = command(
        watcher,
        "NOTIFY SET STATUS (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) "
        "MessageExpunge FlagChange)) (mailboxes Lists (MessageNew MessageExpunge))",
    )
    deliver("first by smtp")
    out["smtp"] = unsolicited(watcher, ["FETCH", "first by smtp"])
    other.append("Lists", None, None, b"Subject: to lists\r\n\r\nbody\r\n")
    out["append_elsewhere"] = unsolicited(watcher, ["STATUS", "Lists"])
    other.select("INBOX")
    other.store("1", "+FLAGS", "\\Flagged")
    out["flag_elsewhere"] = unsolicited(watcher, ["FETCH", "Flagged"])
    other.store("1", "+FLAGS", "\\Deleted")
    other.expunge()
    out["expunge_elsewhere"] = unsolicited(watcher, ["EXPUNGE"])
    # The same during IDLE.
    tag = watcher._new_tag().decode()
    watcher.send(f"{tag} IDLE\r\n".encode())
    out["idle_start"] = reader(watcher).line()
    deliver("second by smtp")
    out["idle_smtp"] = unsolicited(watcher, ["FETCH", "second by smtp"])
    other.append("Lists", None, None, b"Subject: to lists again\r\n\r\nbody\r\n")
    out["idle_append_elsewhere"] = unsolicited(watcher, ["STATUS", "Lists"])
    watcher.send(b"DONE\r\n")
    out["idle_done"] = unsolicited(watcher, [tag])
    # Refusals leave what was set as it was.
    out["badevent"] = command(watcher, "NOTIFY SET (selected (MessageNew MessageExpunge AnnotationChange))")
    out["bad"] = command(watcher, "NOTIFY SET (selected (MessageNew))")
    out["none"] = command(watcher, "NOTIFY NONE")
    deliver("third by smtp")
    out["after_none"] = unsolicited(watcher, ["FETCH"], seconds=3)
    out["noop_after_none"] = command(watcher, "NOOP")
    close(watcher, other)


def names():
    watcher, other = session(), session()
    out["set"] = command(watcher, "NOTIFY SET (personal (MailboxName SubscriptionChange))")
    other.create("Projects")
    out["created"] = unsolicited(watcher, ["LIST", "Projects"])
    other.subscribe("Projects")
    out["subscribed"] = unsolicited(watcher, ["LIST", "Subscribed", "Projects"])
    other.rename("Projects", "Done")
    out["renamed"] = unsolicited(watcher, ["LIST", "Done"])
    other.delete("Done")
    out["deleted"] = unsolicited(watcher, ["LIST", "NonExistent", "Done"])
    close(watcher, other)


def delayed():
    watcher, other = session(), session()
    deliver("to be expunged")
    wait_for_messages(other, "INBOX", 1)
    watcher.select("INBOX")
    out["set"] = command(watcher, "NOTIFY SET (selected-delayed (MessageNew MessageExpunge))")
    other.select("INBOX")
    other.store("1", "+FLAGS", "\\Deleted")
    other.expunge()
    out["expunge_unsolicited"] = unsolicited(watcher, ["EXPUNGE"], seconds=3)
    deliver("new while delayed")
    out["new_unsolicited"] = unsolicited(watcher, ["EXISTS"])
    out["noop"] = command(watcher, "NOOP")
    close(watcher, other)


def overflow():
    count, size = int(sys.argv[6]), int(sys.argv[7])
    # A small receive buffer: the server meets a full socket soon.
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    sock = context.wrap_socket(raw)
    lines_in = Reader(sock)

    def line(seconds=60):
        return lines_in.line(seconds)

    def send(text):
        sock.sendall(text.encode() + b"\r\n")

    def until(tag):
        got = []
        while True:
            text = line()
            got.append(text)
            if text is None or text.startswith(tag + " "):
                return got

    line()
    send(f"a LOGIN {user} {password}")
    until("a")
    send("b SELECT INBOX")
    until("b")
    # Three copies of each message asked for: what a server queueing it all would hold.
    send("c NOTIFY SET (selected (MessageNew (UID BODY.PEEK[] BODY.PEEK[TEXT] BINARY.PEEK[1]) MessageExpunge))")
    out["set"] = until("c")[-1]
    other = session()
    body = b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * (size // 78)
    started = time.monotonic()
    for _ in range(count):
        other.append("INBOX", None, None, body)
    out["appended_in"] = time.monotonic() - started
    # The slow client: it reads nothing for longer than the server waits for it.
    time.sleep(float(sys.argv[8]))
    # Then it reads all that came, up to the overflow notice.
    fetches, overflowed = 0, None
    while True:
        text = line()
        if text is None:
            break
        if " FETCH (" in text:
            fetches += 1
        if "NOTIFICATIONOVERFLOW" in text:
            overflowed = text
            break
    out["fetches_before_overflow"] = fetches
    out["overflow"] = overflowed
    send("d NOOP")
    noop = until("d")
    out["noop"] = noop[-1]
    # Notifications are off now: a new message is told only when asked (NOOP).
    other.append("INBOX", None, None, b"Subject: after\r\n\r\nbody\r\n")
    quiet = []
    while True:
        text = line(3)
        if text is None:
            break
        quiet.append(text)
    out["after_overflow"] = quiet
    send("e NOOP")
    out["noop_after"] = [l for l in until("e") if l and ("EXISTS" in l or l.startswith("e "))]
    other.logout()


{"events": events, "names": names, "delayed": delayed, "overflow": overflow}[scenario]()
print(json.dumps(out))
