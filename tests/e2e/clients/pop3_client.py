"""POP3 with Python's poplib, driven by a list of steps; prints one JSON result per step.
Usage: pop3_client.py PORT MODE USER PASSWORD STEP...
MODE: stls (plain port, STLS first), ssl (implicit TLS), apop (implicit TLS, APOP login).
STEPs: stat, list, uidl, top:N:L (hex), retr:N (hex of the message as received), dele:N,
rset, sleep:SECONDS, drop (close the socket without QUIT), quit."""
import json
import poplib
import ssl
import sys

port, mode, user, password, *steps = sys.argv[1:]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed test certificate

if mode == "stls":
    pop = poplib.POP3("127.0.0.1", int(port), timeout=20)
    caps = pop.capa()
    assert "STLS" in caps and "USER" not in caps, caps
    pop.stls(context=context)
    assert "USER" in pop.capa()
    pop.user(user)
    pop.pass_(password)
else:
    pop = poplib.POP3_SSL("127.0.0.1", int(port), context=context, timeout=20)
    if mode == "apop":
        pop.apop(user, password)
    else:
        pop.user(user)
        pop.pass_(password)


def joined(lines):
    return b"".join(line + b"\r\n" for line in lines)


for step in steps:
    name, *args = step.split(":")
    if name == "stat":
        out = list(pop.stat())
    elif name == "list":
        out = [l.decode() for l in pop.list()[1]]
    elif name == "uidl":
        out = [l.decode() for l in pop.uidl()[1]]
    elif name == "top":
        out = joined(pop.top(int(args[0]), int(args[1]))[1]).hex()
    elif name == "retr":
        resp, lines, octets = pop.retr(int(args[0]))
        out = {"resp": resp.decode(), "message": joined(lines).hex()}
    elif name == "dele":
        out = pop.dele(int(args[0])).decode()
    elif name == "rset":
        out = pop.rset().decode()
    elif name == "drop":
        pop.sock.close()
        out = "dropped"
    elif name == "sleep":
        import time
        time.sleep(float(args[0]))
        out = "slept"
    elif name == "quit":
        out = pop.quit().decode()
    print(json.dumps({"step": step, "out": out}), flush=True)
