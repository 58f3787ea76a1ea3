"""JMAP against IMAP over the same Maildir (see jmap.sh). Usage: jmap_bench.py JMAP_PORT
IMAPS_PORT USER PASSWORD. Prints one line per measurement."""
import imaplib
import json
import ssl
import sys
import threading
import time

import requests
import urllib3

urllib3.disable_warnings()
jmap_port, imaps_port, user, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
base = f"https://127.0.0.1:{jmap_port}"
http = requests.Session()
http.auth = (user, password)
http.verify = False
session = http.get(f"{base}/.well-known/jmap", timeout=60, verify=False).json()
account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


def api(calls, client=http):
    response = client.post(f"{base}/jmap/api/", json={"using": USING, "methodCalls": calls},
                           timeout=300, verify=False)
    response.raise_for_status()
    return response.json()["methodResponses"]


def jmap_listing():
    """Email/query of every id (newest first), then Email/get of headers and preview, 1000 a call."""
    started = time.monotonic()
    ids = api([["Email/query", {"accountId": account, "sort": [{"property": "receivedAt", "isAscending": False}]}, "q"]])[0][1]["ids"]
    queried = time.monotonic()
    got = 0
    for i in range(0, len(ids), 1000):
        result = api([["Email/get", {"accountId": account, "ids": ids[i:i + 1000],
                                     "properties": ["subject", "from", "to", "receivedAt", "size", "keywords", "preview"]}, "g"]])
        got += len(result[0][1]["list"])
    return len(ids), got, queried - started, time.monotonic() - started


def imap_listing():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    imap = imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=context, timeout=300)
    imap.login(user, password)
    imap.select("INBOX", readonly=True)
    _, data = imap.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])")
    count = sum(1 for item in data if isinstance(item, tuple))
    elapsed = time.monotonic() - started
    imap.logout()
    return count, elapsed


for label in ("first (cold: every message parsed)", "second (warm)"):
    n, got, query_s, total_s = jmap_listing()
    print(f"JMAP Email/query + Email/get, {label}: {n} ids in {query_s * 1000:.0f} ms, "
          f"{got} emails with headers and preview in {total_s * 1000:.0f} ms ({got / total_s:.0f} emails/s)")
for label in ("first", "second"):
    count, elapsed = imap_listing()
    print(f"IMAP UID FETCH 1:* (flags, size, date, 4 header fields), {label}: {count} messages in "
          f"{elapsed * 1000:.0f} ms ({count / elapsed:.0f} messages/s)")

one = api([["Email/query", {"accountId": account, "limit": 1}, "q"]])[0][1]["ids"]
small = [["Email/get", {"accountId": account, "ids": one, "properties": ["subject", "from"]}, "g"]]


def hammer(seconds, counts, index):
    client = requests.Session()
    client.auth = (user, password)
    client.verify = False
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        api(small, client)
        counts[index] += 1


for clients in (1, 4):
    counts = [0] * clients
    threads = [threading.Thread(target=hammer, args=(5, counts, i)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"JMAP small Email/get (1 id, 2 properties), {clients} keep-alive client(s): "
          f"{sum(counts) / 5:.0f} requests/s")
print(json.dumps({"ok": True}))
