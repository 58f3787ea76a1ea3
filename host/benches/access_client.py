"""Times mail access over implicit TLS: IMAP FETCH of every full body, BODYSTRUCTURE, ENVELOPE
and HEADER.FIELDS (best of 3), SELECT and STATUS of the unchanged folder, a CONDSTORE resync (`UID FETCH 1:* (FLAGS) (CHANGEDSINCE n)` after another
session changed 100 messages), POP3 RETR of the first N.
Usage: access_client.py IMAPS POP3S USER PASSWORD N_POP. Prints one line per measure."""
import imaplib
import poplib
import ssl
import sys
import time

imaps, pop3s, user, password, n_pop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

imap = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ctx, timeout=300)
imap.login(user, password)
count = int(imap.select("INBOX", readonly=True)[1][0])
shapes = (
    ("full bodies", "(BODY.PEEK[])"),
    ("BODYSTRUCTURE", "(BODYSTRUCTURE)"),
    ("ENVELOPE", "(ENVELOPE)"),
    ("HEADER.FIELDS (FROM SUBJECT DATE)", "(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"),
)
for what, items in shapes:
    # Best of 3: the first run of a shape may fill a server's cache.
    runs = []
    for _ in range(3):
        start = time.time()
        typ, data = imap.fetch("1:*", items)
        runs.append(time.time() - start)
    took = min(runs)
    # imaplib gives a tuple per message with a literal, else one bytes item per message.
    fetched = sum(1 for d in data if isinstance(d, tuple) or (isinstance(d, bytes) and d != b")"))
    print(f"  IMAP FETCH {what}: {fetched}/{count} messages in {took:.2f} s = {fetched / took:.0f} msg/s"
          f" (best of 3; first {runs[0]:.2f} s)")
imap.close()
# SELECT and STATUS of the unchanged folder: the mean of 20 after one to warm up.
for what, command in (("SELECT", lambda: imap.select("INBOX", readonly=True)),
                      ("STATUS", lambda: imap.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)"))):
    command()
    start = time.time()
    for _ in range(20):
        command()
    print(f"  IMAP {what} of the unchanged folder: {(time.time() - start) / 20 * 1000:.2f} ms")
imap.logout()

# CONDSTORE resync: remember HIGHESTMODSEQ, let another session flag 100 messages, then ask for
# what changed since.
a = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ctx, timeout=300)
a.login(user, password)
a._simple_command("SELECT", "INBOX", "(CONDSTORE)")
a.state = "SELECTED"  # imaplib's select() takes no parameters
highest = int(a.untagged_responses.pop("HIGHESTMODSEQ")[0])
b = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ctx, timeout=300)
b.login(user, password)
b.select("INBOX")
step = max(1, count // 100)
for n in range(1, count + 1, step)[:100]:
    b.store(str(n), "+FLAGS", "(\\Flagged)")
b.logout()
a.noop()
a.untagged_responses.clear()  # the NOOP's flag updates are not the resync's answer
start = time.time()
typ, data = a.uid("FETCH", "1:*", f"(FLAGS) (CHANGEDSINCE {highest})")
took = time.time() - start
changed = sum(1 for d in data if d)
print(f"  IMAP CONDSTORE resync of {count} after 100 changes: {changed} messages in {took * 1000:.1f} ms")
a.logout()

pop = poplib.POP3_SSL("127.0.0.1", pop3s, context=ctx, timeout=300)
pop.user(user)
pop.pass_(password)
start = time.time()
total = 0
for i in range(1, n_pop + 1):
    total += len(pop.retr(i)[1])
took = time.time() - start
print(f"  POP3 RETR: {n_pop} messages in {took:.2f} s = {n_pop / took:.0f} msg/s")
pop.quit()
