"""Reads a delivery status notification (RFC 3464) with Python's email package and prints it as
JSON: the report's content types, its per-message fields and each recipient's fields (with
Will-Retry-Until also as Unix seconds, "will_retry_until_unix"), and the returned content.
Usage: dsn_parse.py FILE"""
import email
import email.policy
import email.utils
import json
import sys

with open(sys.argv[1], "rb") as f:
    message = email.message_from_binary_file(f, policy=email.policy.compat32)

out = {
    "content_type": message.get_content_type(),
    "report_type": message.get_param("report-type"),
    "subject": message["Subject"],
    "parts": [part.get_content_type() for part in message.get_payload()] if message.is_multipart() else [],
}
for part in message.get_payload() if message.is_multipart() else []:
    if part.get_content_type() == "message/delivery-status":
        # The email package reads the status groups as a list of header blocks.
        blocks = part.get_payload()
        out["per_message"] = dict(blocks[0].items())
        out["recipients"] = [dict(block.items()) for block in blocks[1:]]
        for recipient in out["recipients"]:
            if "Will-Retry-Until" in recipient:
                until = email.utils.parsedate_to_datetime(recipient["Will-Retry-Until"])
                recipient["will_retry_until_unix"] = int(until.timestamp())
    elif part.get_content_type() in ("text/rfc822-headers", "message/rfc822"):
        payload = part.get_payload()
        out["returned"] = payload if isinstance(payload, str) else payload[0].as_string()
print(json.dumps(out))
