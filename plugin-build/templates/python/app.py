"""{{name}}: refuses recipients at the domains listed in `blocked-domains` and stamps every
accepted message with `X-Checked-By: {{name}}`.

Build: `mailgate plugin build` (componentize-py; the component lands in target/plugin.wasm);
test: `mailgate test cases`. The bindings (`wit_world`) are generated from the contract at
build time. Define a class per stage you want, named after it (Connect, Helo, MailFrom,
RcptTo, Data, Deliver, Retrieve) with a `handle` method: only those stages are exported and
called. `Info.describe` says who the plugin is and which config keys it takes."""
from wit_world import exports
from wit_world.imports import edits, host
from wit_world.imports import types as t


def reject(code, enhanced, text):
    cls, subject, detail = (int(n) for n in enhanced.split("."))
    status = t.EnhancedStatus(class_=cls, subject=subject, detail=detail)
    return t.Verdict_Reject(t.Reply(code=code, enhanced=status, lines=[text]))


class Info(exports.Info):
    def describe(self):
        blocked = t.ConfigKey(
            name="blocked-domains",
            value_type="string-list",
            default="[]",
            doc="recipient domains refused at RCPT",
            required=False,
        )
        return t.PluginInfo(name="{{name}}", version="0.1.0", capabilities=[], config=[blocked])


class RcptTo(exports.RcptTo):
    def handle(self, session, envelope, recipient, params):
        domain = recipient.rpartition("@")[2]
        blocked = {d.lower() for d in host.config_list("blocked-domains")}
        if domain.lower() in blocked:
            return reject(550, "5.7.1", f"No mail for {domain} here")
        return t.Verdict_Continue()


class Data(exports.Data):
    def handle(self, session, envelope, message):
        edits.add_header("X-Checked-By", "{{name}}")
        return t.Verdict_Continue()
