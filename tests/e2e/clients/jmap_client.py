"""A JMAP client built on jmapc (PyPI): what a user's program does with the gateway's JMAP.
Usage: jmap_client.py PORT USER PASSWORD COMMAND [ARGS...]; prints one JSON value.

Commands:
  session                    the session resource as jmapc reads it
  mailboxes                  every mailbox by role (or name): id, counts
  inbox                      Email/query of the inbox (newest first) + Email/get of each
  get ID PROPERTY...         Email/get of one email with the given properties
  keywords ID KEYWORD=on|off...   Email/set of keywords
  move ID ROLE               Email/set of mailboxIds: into the mailbox with that role
  destroy ID                 Email/set destroy
  state                      the Email state
  changes STATE              Email/changes since STATE
  download ID [PART]         the blob of a message (or of one part), as text
  send TO[,TO] SUBJECT TEXT [FILE]  compose (upload FILE, Email/set create in Drafts) and
                             submit (EmailSubmission/set), the sent email moved to Sent
  send-envelope ENVELOPE SUBJECT  as send, to the rcptTo addresses, with the submission's
                             envelope given: JSON {"mailFrom": {"email", "parameters"},
                             "rcptTo": [{"email", "parameters"}...]} (RFC 8621 section 7)
  import FILE ROLE           upload a message file and Email/import it into the mailbox
  push SMTP_PORT             opens the event source (sseclient, as jmapc does), then delivers
                             a message over SMTP; the first state event (within 30 s)
  raw FILE [AUTH]            POST the file to the API as is: status and body
                             (AUTH: user:password, or -: for none)
"""
import json
import sys

import requests
import urllib3

# The gateway's certificate is self-signed: jmapc (and its event source) go through requests.
urllib3.disable_warnings()
_request = requests.Session.request


def _insecure(self, *args, **kwargs):
    kwargs["verify"] = False
    return _request(self, *args, **kwargs)


requests.Session.request = _insecure

from jmapc import Client, EmailQueryFilterCondition, MailboxQueryFilterCondition, Ref  # noqa: E402
from jmapc.methods import (  # noqa: E402
    EmailChanges,
    EmailSubmissionSet,
    IdentityGet,
    EmailGet,
    EmailQuery,
    EmailSet,
    MailboxGet,
    MailboxQuery,
)
from jmapc.models import (  # noqa: E402
    Comparator,
    Email,
    EmailAddress,
    EmailBodyPart,
    EmailBodyValue,
    EmailSubmission,
    Envelope,
)
from jmapc.models import Address as EnvelopeAddress  # noqa: E402

port, user, password, command, *args = sys.argv[1:]
host = f"127.0.0.1:{port}"
client = Client.create_with_password(host=host, user=user, password=password)


def mailboxes():
    result = client.request(MailboxGet(ids=None), single_response=True)
    return {m.role or m.name: {"id": m.id, "name": m.name, "total": m.total_emails,
                               "unread": m.unread_emails} for m in result.data}


def email_dict(email):
    out = email.to_dict()
    return out


def inbox():
    calls = [
        MailboxQuery(filter=MailboxQueryFilterCondition(role="inbox")),
        EmailQuery(
            collapse_threads=False,
            filter=EmailQueryFilterCondition(in_mailbox=Ref("/ids/0")),
            sort=[Comparator(property="receivedAt", is_ascending=False)],
        ),
        EmailGet(ids=Ref("/ids"), properties=[
            "id", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "subject",
            "from", "to", "preview", "hasAttachment", "blobId"]),
    ]
    responses = client.request(calls, raise_errors=True)
    return {
        "inbox": responses[0].response.ids[0],
        "ids": responses[1].response.ids,
        "state": responses[2].response.state,
        "emails": [email_dict(e) for e in responses[2].response.data],
    }


def email_set(update=None, destroy=None):
    result = client.request(EmailSet(update=update, destroy=destroy), single_response=True)
    return {
        "updated": sorted((result.updated or {}).keys()),
        "not_updated": {k: v.to_dict() for k, v in (result.not_updated or {}).items()},
        "destroyed": result.destroyed or [],
        "not_destroyed": {k: v.to_dict() for k, v in (result.not_destroyed or {}).items()},
        "new_state": result.new_state,
    }


def run():
    if command == "session":
        session = client.jmap_session
        return {"username": session.username, "account_id": client.account_id,
                "urns": sorted(session.capabilities.urns), "api_url": session.api_url,
                "download_url": session.download_url}
    if command == "mailboxes":
        return mailboxes()
    if command == "inbox":
        return inbox()
    if command == "get":
        result = client.request(EmailGet(ids=[args[0]], properties=args[1:],
                                         fetch_text_body_values=True),
                                single_response=True)
        return {"list": [email_dict(e) for e in result.data], "not_found": result.not_found}
    if command == "keywords":
        patch = {}
        for item in args[1:]:
            keyword, state = item.split("=")
            patch[f"keywords/{keyword}"] = True if state == "on" else None
        return email_set(update={args[0]: patch})
    if command == "move":
        target = mailboxes()[args[1]]["id"]
        return email_set(update={args[0]: {"mailboxIds": {target: True}}})
    if command == "destroy":
        return email_set(destroy=[args[0]])
    if command == "state":
        return client.request(EmailGet(ids=[]), single_response=True).state
    if command == "changes":
        result = client.request(EmailChanges(since_state=args[0]), single_response=True)
        return {"created": result.created, "updated": result.updated,
                "destroyed": result.destroyed, "new_state": result.new_state}
    if command == "download":
        blob = "B" + args[0][1:] + (f"P{args[1]}" if len(args) > 1 else "")
        url = client.jmap_session.download_url.format(
            accountId=client.account_id, blobId=blob, name="file", type="text/plain")
        response = client.requests_session.get(url, timeout=20)
        return {"status": response.status_code, "text": response.text}
    if command == "send":
        boxes = mailboxes()
        identity = client.request(IdentityGet(), single_response=True).data[0]
        attachments = []
        if len(args) > 3:
            blob = client.upload_blob(args[3])
            attachments.append(EmailBodyPart(blob_id=blob.id, type=blob.type,
                                             name=args[3].rsplit("/", 1)[-1]))
        draft = Email(
            mail_from=[EmailAddress(name="Test Sender", email=identity.email)],
            to=[EmailAddress(email=a) for a in args[0].split(",")],
            subject=args[1],
            keywords={"$draft": True, "$seen": True},
            mailbox_ids={boxes["drafts"]["id"]: True},
            body_values={"body": EmailBodyValue(value=args[2])},
            text_body=[EmailBodyPart(part_id="body", type="text/plain")],
            attachments=attachments or None,
        )
        responses = client.request([
            EmailSet(create={"draft": draft}),
            EmailSubmissionSet(
                create={"send": EmailSubmission(identity_id=identity.id, email_id="#draft")},
                on_success_update_email={"#send": {
                    f"mailboxIds/{boxes['drafts']['id']}": None,
                    f"mailboxIds/{boxes['sent']['id']}": True,
                    "keywords/$draft": None}}),
        ])
        out = []
        for r in responses:
            out.append({"method": type(r.response).__name__,
                        "response": r.response.to_dict()})
        return out
    if command == "send-envelope":
        given = json.loads(args[0])
        boxes = mailboxes()
        identity = client.request(IdentityGet(), single_response=True).data[0]
        envelope = Envelope(
            mail_from=EnvelopeAddress(**given["mailFrom"]),
            rcpt_to=[EnvelopeAddress(**r) for r in given["rcptTo"]],
        )
        draft = Email(
            mail_from=[EmailAddress(email=identity.email)],
            to=[EmailAddress(email=r.email) for r in envelope.rcpt_to],
            subject=args[1],
            keywords={"$draft": True, "$seen": True},
            mailbox_ids={boxes["drafts"]["id"]: True},
            body_values={"body": EmailBodyValue(value="Sent with an envelope.")},
            text_body=[EmailBodyPart(part_id="body", type="text/plain")],
        )
        submission = EmailSubmission(identity_id=identity.id, email_id="#draft", envelope=envelope)
        responses = client.request([
            EmailSet(create={"draft": draft}),
            EmailSubmissionSet(create={"send": submission}),
        ])
        return [{"method": type(r.response).__name__, "response": r.response.to_dict()}
                for r in responses]
    if command == "import":
        blob = client.upload_blob(args[0])
        target = mailboxes()[args[1]]["id"]
        # jmapc has no Email/import: the request is made by hand, over jmapc's session.
        request = {"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                   "methodCalls": [["Email/import", {"accountId": client.account_id, "emails": {
                       "one": {"blobId": blob.id, "mailboxIds": {target: True},
                               "keywords": {"$seen": True}}}}, "i"]]}
        response = client.requests_session.post(client.jmap_session.api_url, json=request,
                                                 timeout=30)
        return response.json()["methodResponses"][0]
    if command == "push":
        import smtplib
        import time

        import sseclient
        from jmapc.models import Event

        url = client.jmap_session.event_source_url.format(
            types="*", closeafter="state", ping=0)
        # Connected once the constructor returns: the delivery below comes after.
        events = sseclient.SSEClient(url, auth=client.requests_session.auth, timeout=30)
        before = client.request(EmailGet(ids=[]), single_response=True).state
        with smtplib.SMTP("127.0.0.1", int(args[0]), timeout=30) as smtp:
            smtp.sendmail("sender@client.test", [user],
                          f"From: sender@client.test\r\nTo: {user}\r\nSubject: pushed\r\n\r\nHi\r\n")
        sent_at = time.monotonic()
        for event in events:
            if event.event == "state":
                changed = Event.load_from_sseclient_event(event).data.changed
                return {"before": before, "seconds": time.monotonic() - sent_at,
                        "changed": {k: v.to_dict() for k, v in changed.items()}}
        return {"before": before, "changed": None}
    if command == "raw":
        auth = tuple(args[1].split(":", 1)) if len(args) > 1 else (user, password)
        with open(args[0], "rb") as body:
            data = body.read()
        response = requests.post(f"https://{host}/jmap/api/", data=data,
                                 headers={"Content-Type": "application/json"},
                                 auth=auth if auth != ("-", "") else None, timeout=30)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return {"status": response.status_code, "body": body,
                "content_type": response.headers.get("Content-Type")}
    raise SystemExit(f"unknown command {command}")


print(json.dumps(run(), default=str))
