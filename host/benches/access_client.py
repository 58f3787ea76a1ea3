"""Times mail access over implicit TLS: IMAP FETCH of every full body, IMAP FETCH of every
BODYSTRUCTURE, POP3 RETR of the first N. Usage: access_client.py IMAPS POP3S USER PASSWORD N_POP
Prints one line per measure."""
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
for what, items in (("full bodies", "(BODY.PEEK[])"), ("BODYSTRUCTURE", "(BODYSTRUCTURE)")):
    start = time.time()
    typ, data = imap.fetch("1:*", items)
    took = time.time() - start
    # imaplib gives a tuple per message with a literal, else one bytes item per message.
    fetched = sum(1 for d in data if isinstance(d, tuple) or (isinstance(d, bytes) and d != b")"))
    print(f"  IMAP FETCH {what}: {fetched}/{count} messages in {took:.2f} s = {fetched / took:.0f} msg/s")
imap.logout()

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
