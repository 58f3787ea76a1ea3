"""Sends mail over SMTP from several threads until the server turns clients away.

Usage: smtp_load.py PORT THREADS MAX_SECONDS RCPT...

Each thread opens connections and sends messages on them, alternating the recipients, until a
connection is refused or answered with 421 (the server is shutting down). One line per event:
  ACK <subject> <recipient>   the message was accepted (250 to the end of data)
  421 <stage>                 the server said 421 before or between transactions
  RESET <stage>               the connection broke mid-transaction without a 421
  REFUSED                     no connection could be made
"""

import smtplib
import sys
import threading
import time

port, threads, max_seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
recipients = sys.argv[4:]
deadline = time.time() + max_seconds
lock = threading.Lock()


def say(line):
    with lock:
        print(line, flush=True)


def run(tid):
    n = 0
    while time.time() < deadline:
        try:
            smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
        except OSError:
            say("REFUSED")
            return
        stage = "greeting"
        try:
            code, _ = smtp.ehlo("load.example")
            if code == 421:
                say("421 ehlo")
                return
            for _ in range(5):
                rcpt = recipients[n % len(recipients)]
                subject = f"load-{tid}-{n}"
                n += 1
                stage = "mail"
                code, _ = smtp.mail("load@client.example")
                if code == 421:
                    say("421 mail")
                    return
                # From here on the client is in a transaction.
                stage = "rcpt"
                code, reply = smtp.rcpt(rcpt)
                if code != 250:
                    say(f"RESET rcpt {code} {reply!r}")
                    return
                stage = "data"
                body = f"Subject: {subject}\r\nMessage-ID: <{subject}@load.example>\r\n\r\n{subject}\r\n"
                code, reply = smtp.data(body.encode())
                if code != 250:
                    say(f"RESET data {code} {reply!r}")
                    return
                say(f"ACK {subject} {rcpt}")
            stage = "quit"
            smtp.quit()
        except smtplib.SMTPDataError as e:
            say(f"RESET {stage} {e.smtp_code}")
            return
        except smtplib.SMTPResponseException as e:
            say(f"{e.smtp_code} {stage}" if e.smtp_code == 421 else f"RESET {stage} {e.smtp_code}")
            return
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            if stage in ("greeting", "mail", "quit"):
                say(f"CLOSED {stage}")
            else:
                say(f"RESET {stage} {e!r}")
            return


workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
