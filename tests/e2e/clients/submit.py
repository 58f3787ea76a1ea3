"""Submission with Python's smtplib: EHLO, STARTTLS, EHLO, AUTH, one message to several
recipients. Usage: submit.py PORT USER PASSWORD RCPT... Prints the final reply of DATA."""
import smtplib
import ssl
import sys

port, user, password, *rcpts = sys.argv[1:]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed test certificate

with smtplib.SMTP("127.0.0.1", int(port), timeout=20) as smtp:
    smtp.ehlo("client.example.net")
    assert smtp.has_extn("starttls"), smtp.esmtp_features
    assert not smtp.has_extn("auth"), "AUTH must not be offered before TLS"
    smtp.starttls(context=context)
    smtp.ehlo("client.example.net")
    assert smtp.has_extn("auth"), smtp.esmtp_features
    smtp.login(user, password)
    message = (
        f"From: {user}\r\nTo: {', '.join(rcpts)}\r\nSubject: smtplib test\r\n"
        "Date: Sun, 22 Nov 2026 09:00:00 +0000\r\n\r\nHello from smtplib.\r\n..dot-stuffed line\r\n"
    )
    smtp.mail(user)
    for rcpt in rcpts:
        code, text = smtp.rcpt(rcpt)
        assert code == 250, (rcpt, code, text)
    code, text = smtp.data(message)
    print(code, text.decode())
