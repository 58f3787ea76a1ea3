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
from componentize_py_types import Err


def error_text(error):
    """A host call's error as text. The bindings raise `Err` whose `value` is the contract's
    variant (`Denied_Failed(value="kv store ...: connection refused")`), which `str()` shows as a
    dataclass at best."""
    value = error.value if isinstance(error, Err) else error
    inner = getattr(value, "value", None)
    kind = type(value).__name__.split("_", 1)[-1]
    if kind == "Failed":
        return str(inner)
    if inner is None:
        return kind
    if hasattr(inner, "value") or type(inner).__name__.startswith("Denied_"):
        return f"{kind}: {error_text(inner)}"
    return f"{kind}: {inner}"


class HostError(Exception):
    """A host call that failed, with its reason as the message; `value` keeps the variant."""

    def __init__(self, what, error):
        super().__init__(f"{what}: {error_text(error)}")
        self.value = error.value if isinstance(error, Err) else error


def _textual(what, call):
    def wrapped(*args):
        try:
            return call(*args)
        except Err as e:
            raise HostError(what, e) from None

    return wrapped


# The kv store, DNS and files: as the host's, but what they raise reads as text.
kv_get = _textual("kv", host.kv_get)
kv_set = _textual("kv", host.kv_set)
kv_delete = _textual("kv", host.kv_delete)
kv_incr = _textual("kv", host.kv_incr)
dns_lookup = _textual("dns", host.dns_lookup)
file_read = _textual("file", host.file_read)

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


VALUE_TYPES = ("string", "integer", "float", "boolean", "string-list", "table")


def _must_be(where, value, kind, expected):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{where} must be {expected}, not {type(value).__name__} {value!r}")


def info(name, version, capabilities=(), config=()):
    """What `Info.describe` returns."""
    _must_be("mg.info(): name", name, str, "text")
    _must_be(f"mg.info({name!r}, ...): version", version, str, 'text such as "0.1.0"')
    capabilities = list(capabilities)
    for capability in capabilities:
        _must_be(f"mg.info({name!r}, ...): each capability", capability, str, 'text ("kv", "dns", "files")')
    config = list(config)
    for key in config:
        _must_be(f"mg.info({name!r}, ...): each config entry", key, t.ConfigKey, "made by mg.config_key(...)")
    return t.PluginInfo(name=name, version=version, capabilities=capabilities, config=config)


def _toml(value):
    """`value` written as TOML text, for the hint in an error."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def config_key(name, value_type, doc, default=None, required=False):
    """A declared config key; value_type: string, integer, float, boolean, string-list, table.
    `default` is TOML text: "10", '"text"', '["a", "b"]'."""
    _must_be("mg.config_key(): name", name, str, "text")
    where = f"mg.config_key({name!r}, ...)"
    if value_type not in VALUE_TYPES:
        raise ValueError(f"{where}: value_type is {value_type!r}; expected one of {', '.join(VALUE_TYPES)}")
    _must_be(f"{where}: doc", doc, str, "text (one line)")
    if default is not None and not isinstance(default, str):
        raise TypeError(
            f"{where}: default must be TOML text (a str) or None, not {type(default).__name__} "
            f"{default!r}: write default={_toml(default)!r}"
        )
    _must_be(f"{where}: required", required, bool, "True or False")
    return t.ConfigKey(name=name, value_type=value_type, default=default, doc=doc, required=required)


# What the build checks: the stage classes of app.py (see `checked`).
STAGE_CLASSES = ("Connect", "Helo", "MailFrom", "RcptTo", "Data", "Deliver", "Retrieve")
_VERDICTS = tuple(getattr(t, n) for n in dir(t) if n.startswith("Verdict_"))
_VERDICT_HELPERS = (
    'mg.proceed(), mg.accept(), mg.reject(550, "5.7.1", text), mg.tempfail(451, "4.7.1", text), '
    "mg.disconnect(...), mg.discard(), mg.quarantine(reason) or mg.hide()"
)


def _returned(value):
    if value is None:
        return "None (is there a way through it without `return`?)"
    return f"{type(value).__name__} {value!r}"


def checked(cls):
    """`cls` (a stage class or Info from app.py) with what it returns checked, so a mistake is
    named in the plugin's terms instead of failing deep in the bindings. The build applies it."""
    if cls.__name__ == "Info":
        describe = cls.describe

        def checked_describe(self):
            result = describe(self)
            if not isinstance(result, t.PluginInfo):
                raise TypeError(
                    f"Info.describe returned {_returned(result)}; expected "
                    'mg.info(name, version, capabilities=[...], config=[...])'
                )
            return result

        return type(cls.__name__, (cls,), {"describe": checked_describe, "__module__": cls.__module__})
    handle = cls.handle

    def checked_handle(self, *args):
        verdict = handle(self, *args)
        if not isinstance(verdict, _VERDICTS):
            raise TypeError(
                f"{cls.__name__}.handle returned {_returned(verdict)}; expected a verdict: {_VERDICT_HELPERS}"
            )
        return verdict

    return type(cls.__name__, (cls,), {"handle": checked_handle, "__module__": cls.__module__})


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
