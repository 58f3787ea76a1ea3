"""spam-score: a keyword content filter written in Python (componentize-py).

At the data stage it reads every decoded text part (and the Subject), adds up the weight of
each configured keyword found, stamps the message with `X-Spam-Score: <score>` and rejects it
when the score reaches the threshold.

Config (in the gateway's [plugin.config]):
    threshold = 5            # reject at or above this score
    keywords = { "viagra" = 3, "lottery" = 2 }   # case-insensitive, counted once per keyword
    header = "X-Spam-Score"  # the header added
"""
import json

from wit_world import exports
from wit_world.imports import edits, host
from wit_world.imports import types as t

DEFAULT_KEYWORDS = {"viagra": 3, "lottery": 2, "winner": 2, "bitcoin": 1, "urgent": 1}


def settings():
    try:
        config = json.loads(host.config_json() or "{}")
    except ValueError:
        config = {}
    keywords = config.get("keywords") or DEFAULT_KEYWORDS
    keywords = {str(k).lower(): float(v) for k, v in keywords.items()}
    return float(config.get("threshold", 5)), keywords, str(config.get("header", "X-Spam-Score"))


def text_of(message):
    """The Subject and every decoded text part that is not an attachment."""
    chunks = [h.decoded for h in message.header("Subject")]
    for part in message.parts():
        ct = part.content_type
        if ct.media_type == "text" and part.disposition != "attachment":
            text = message.part_text(part.id)
            if text:
                chunks.append(text)
    return "\n".join(chunks).lower()


def score(text, keywords):
    return sum(weight for word, weight in keywords.items() if word in text)


def key(name, value_type, default, doc):
    return t.ConfigKey(name=name, value_type=value_type, default=default, doc=doc, required=False)


class Info(exports.Info):
    def describe(self):
        config = [
            key("threshold", "float", "5", "reject at or above this score"),
            key("keywords", "table", None, "keyword = weight, case-insensitive"),
            key("header", "string", '"X-Spam-Score"', "the header that carries the score"),
        ]
        return t.PluginInfo(name="spam-score", version="0.2.0", capabilities=[], config=config)


class Data(exports.Data):
    def handle(self, session, envelope, message):
        threshold, keywords, header = settings()
        total = score(text_of(message), keywords)
        shown = f"{total:g}"
        host.log(host.Level.INFO, f"score {shown} (threshold {threshold:g})", [])
        if total >= threshold:
            reply = t.Reply(
                code=550,
                enhanced=t.EnhancedStatus(class_=5, subject=7, detail=1),
                lines=[f"Message looks like spam (score {shown}, threshold {threshold:g})"],
            )
            return t.Verdict_Reject(reply)
        edits.set_header(header, shown)
        return t.Verdict_Continue()
