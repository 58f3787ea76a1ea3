"""An IMAP session with Python's imaplib, checking what a mail client relies on.
Usage: imap_client.py IMAP_PORT SMTP_PORT USER PASSWORD
Prints one JSON object with what each step returned (bytes as latin-1 text)."""
import imaplib
import json
import smtplib
import socket
import ssl
import sys

imap_port, smtp_port, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed test certificate
out = {}


def text(data):
    if isinstance(data, (list, tuple)):
        return [text(d) for d in data]
    if isinstance(data, bytes):
        return data.decode("latin-1")
    return data


imap = imaplib.IMAP4("127.0.0.1", imap_port, timeout=20)
out["caps_before_tls"] = list(imap.capabilities)
try:
    imap.login(user, password)
    out["login_before_tls"] = "accepted"
except imaplib.IMAP4.error as e:
    out["login_before_tls"] = str(e)
imap.starttls(ssl_context=context)
out["login"] = text(imap.login(user, password))
out["list"] = text(imap.list()[1])
out["create"] = text(imap.create("Archive/2026"))
out["list_after_create"] = text(imap.list('""', "*")[1])
out["select"] = text(imap.select("INBOX"))
out["uidvalidity"] = text(imap.response("UIDVALIDITY"))
out["fetch_structure"] = text(imap.fetch("1", "(UID RFC822.SIZE BODYSTRUCTURE ENVELOPE)")[1])
out["fetch_partial"] = text(imap.fetch("2", "(BODY.PEEK[TEXT]<0.10>)")[1])
out["fetch_header_fields"] = text(imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1])
out["fetch_full"] = text(imap.fetch("3", "(BODY[])")[1])
out["search_subject"] = text(imap.search(None, "SUBJECT", "second")[1])
out["search_unseen"] = text(imap.search(None, "UNSEEN")[1])
out["search_or_not"] = text(imap.search(None, "OR", "SUBJECT", "first", "NOT", "LARGER", "1")[1])
out["uid_search_all"] = text(imap.uid("SEARCH", None, "ALL")[1])
out["store"] = text(imap.store("1", "+FLAGS", "(\\Flagged)")[1])
out["search_flagged"] = text(imap.search(None, "FLAGGED")[1])
out["copy"] = text(imap.copy("1", "Archive/2026"))
out["move"] = text(imap.uid("MOVE", out["uid_search_all"][0].split()[1], "Archive/2026"))
out["status_archive"] = text(imap.status("Archive/2026", "(MESSAGES UIDNEXT UNSEEN)")[1])
out["store_deleted"] = text(imap.store("1", "+FLAGS", "(\\Deleted)")[1])
out["expunge"] = text(imap.expunge()[1])
appended = b"From: me@x.test\r\nSubject: appended\r\n\r\nAppended with a literal.\r\n"
out["append"] = text(imap.append("Archive/2026", "(\\Seen)", None, appended))
out["select_archive"] = text(imap.select("Archive/2026"))
out["archive_subjects"] = text(imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1])
out["bad_name"] = text(imap._simple_command("SELECT", '"../../etc"'))
out["namespace"] = text(imap.namespace()[1])

# IDLE on INBOX while a message is delivered over SMTP.
imap.select("INBOX")
tag = imap._new_tag()
imap.send(tag + b" IDLE\r\n")
out["idle_start"] = text(imap.readline())
with smtplib.SMTP("127.0.0.1", smtp_port, timeout=20) as smtp:
    smtp.sendmail("sender@client.test", [user], "Subject: during idle\r\n\r\nnew\r\n")
imap.sock.settimeout(10)
out["idle_update"] = text(imap.readline())
imap.send(b"DONE\r\n")
line = imap.readline()
while not line.startswith(tag):
    line = imap.readline()
out["idle_done"] = text(line)
out["logout"] = text(imap.logout())
print(json.dumps(out))
