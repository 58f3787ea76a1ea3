"""Implicit TLS (RFC 8314) with SMTP_SSL, AUTH LOGIN. Usage: implicit_tls.py PORT USER PASSWORD RCPT"""
import smtplib
import ssl
import sys

port, user, password, rcpt = sys.argv[1:]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with smtplib.SMTP_SSL("127.0.0.1", int(port), context=context, timeout=20) as smtp:
    smtp.ehlo("client.example.net")
    smtp.login(user, password)
    refused = smtp.sendmail(user, [rcpt], f"From: {user}\r\nTo: {rcpt}\r\nSubject: implicit\r\n\r\nover TLS\r\n")
    print("refused:", refused)
