"""Submission with DSN requests (RFC 3461) through Python's smtplib: EHLO, STARTTLS, EHLO, AUTH,
then MAIL with RET and ENVID and each RCPT with its own options.
Usage: dsn_submit.py PORT USER PASSWORD RET ENVID RCPT[;OPTION...]...
e.g. "bob@example.test;NOTIFY=SUCCESS,FAILURE;ORCPT=rfc822;bob@example.test" (the options after
the address are split on ";NOTIFY=" and ";ORCPT="). Prints the final reply of DATA."""
import smtplib
import ssl
import sys

port, user, password, ret, envid, *specs = sys.argv[1:]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE  # the gateway's self-signed test certificate


def rcpt_options(spec):
    address, options = spec, []
    for name in ("ORCPT", "NOTIFY"):
        marker = ";" + name + "="
        if marker in address:
            address, value = address.split(marker, 1)
            options.append(name + "=" + value)
    return address, options


with smtplib.SMTP("127.0.0.1", int(port), timeout=20) as smtp:
    smtp.ehlo("client.example.net")
    smtp.starttls(context=context)
    smtp.ehlo("client.example.net")
    assert smtp.has_extn("dsn"), smtp.esmtp_features
    smtp.login(user, password)
    message = (
        f"From: {user}\r\nSubject: dsn test\r\nMessage-ID: <dsn-test@client.example.net>\r\n"
        "Date: Sun, 22 Nov 2026 09:00:00 +0000\r\n\r\nThe body of the original message.\r\n"
    )
    code, text = smtp.mail(user, [f"RET={ret}", f"ENVID={envid}"])
    assert code == 250, (code, text)
    for spec in specs:
        address, options = rcpt_options(spec)
        code, text = smtp.rcpt(address, options)
        assert code == 250, (address, options, code, text)
    code, text = smtp.data(message)
    print(code, text.decode())
