"""mailgate: helpers for mailgate plugins in Python (contract mailgate:plugin@0.2.0).

`mailgate plugin build` puts this module on the plugin's Python path: `import mailgate as mg`.
It wraps the generated bindings (`wit_world`) so a plugin reads like the Rust ones:

    class RcptTo(exports.RcptTo):
        def handle(self, session, envelope, recipient, params):
            if mg.domain_of(recipient) in mg.config_list("blocked-domains"):
                return mg.reject(550, "5.7.1", "Not here")
            return mg.proceed()
"""
import json

from wit_world.imports import edits, host
from wit_world.imports import types as t

# Edits: asked for during the call, applied when it returns (see docs/plugins.md).
add_header = edits.add_header
insert_header = edits.insert_header
set_header = edits.set_header
remove_header = edits.remove_header
replace_body = edits.replace_body
replace_part = edits.replace_part
remove_part = edits.remove_part
append_footer = edits.append_footer
change_sender = edits.change_sender
add_recipient = edits.add_recipient
remove_recipient = edits.remove_recipient
defer = edits.defer


def reroute(host_name, port):
    """Deliver stage only: send this attempt to host_name:port."""
    return edits.reroute(t.HostPort(host=host_name, port=port))


def reply(code, enhanced, text):
    """An SMTP reply; `enhanced` is "5.7.1" or "" for none."""
    status = None
    parts = enhanced.split(".") if enhanced else []
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        status = t.EnhancedStatus(class_=int(parts[0]), subject=int(parts[1]), detail=int(parts[2]))
    return t.Reply(code=code, enhanced=status, lines=[text])


def proceed():
    """No objection: the next plugin runs."""
    return t.Verdict_Continue()


def accept():
    """Stop the chain for this stage and accept."""
    return t.Verdict_Accept()


def reject(code, enhanced, text):
    """Refuse with a 5xx reply."""
    return t.Verdict_Reject(reply(code, enhanced, text))


def tempfail(code, enhanced, text):
    """Refuse for now with a 4xx reply."""
    return t.Verdict_Tempfail(reply(code, enhanced, text))


def disconnect(code, enhanced, text):
    """Reply, then close the connection."""
    return t.Verdict_Disconnect(reply(code, enhanced, text))


def discard():
    """Accept the message and drop it (data, deliver)."""
    return t.Verdict_Discard()


def quarantine(reason):
    """Accept the message and hold it aside (data, deliver)."""
    return t.Verdict_Quarantine(reason)


def hide():
    """Retrieve stage only: this client does not see the message."""
    return t.Verdict_Hide()


def info(name, version, capabilities=(), config=()):
    """What `Info.describe` returns."""
    return t.PluginInfo(name=name, version=version, capabilities=list(capabilities), config=list(config))


def config_key(name, value_type, doc, default=None, required=False):
    """A declared config key; value_type: string, integer, float, boolean, string-list, table."""
    return t.ConfigKey(name=name, value_type=value_type, default=default, doc=doc, required=required)


def config(key, default=None):
    """A config value as text (by dotted key), or `default`."""
    value = host.config_get(key)
    return default if value is None else value


def config_int(key, default=0):
    """A config value as an integer, or `default` when missing or not a number."""
    try:
        return int(host.config_get(key))
    except (TypeError, ValueError):
        return default


def config_list(key):
    """An array of scalars as a list of text (a scalar gives one item, a missing key none)."""
    return list(host.config_list(key))


def config_table():
    """The plugin's whole config table."""
    return json.loads(host.config_json() or "{}")


def header(message, name):
    """The decoded value of the first header field named `name`, or None."""
    fields = message.header(name)
    return fields[0].decoded if fields else None


def domain_of(address):
    """The domain of an address, lower case ("" when it has none)."""
    return address.rpartition("@")[2].lower()


def log(message, level=host.Level.INFO):
    """A line in the gateway log, tagged with the plugin and session."""
    host.log(level, message, [])
