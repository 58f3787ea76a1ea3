"""{{name}}: refuses recipients at the domains listed in `blocked-domains` and stamps every
accepted message with `X-Checked-By: {{name}}`.

Build: `mailgate plugin build` (componentize-py; the component lands in target/plugin.wasm);
test: `mailgate test cases`. The bindings (`wit_world`) are generated from wit/ at build time.
Every stage must be defined; the host calls only those listed in describe()."""
from wit_world import exports
from wit_world.imports import host
from wit_world.imports import types as t


def proceed(edits=None):
    return t.Outcome(verdict=t.Verdict_Continue(), edits=edits or [])


def reject(code, enhanced, text):
    cls, subject, detail = (int(n) for n in enhanced.split("."))
    status = t.EnhancedStatus(class_=cls, subject=subject, detail=detail)
    reply = t.Reply(code=code, enhanced=status, lines=[text])
    return t.Outcome(verdict=t.Verdict_Reject(reply), edits=[])


class Handler(exports.Handler):
    def describe(self):
        stages = [t.Stage.RCPT_TO, t.Stage.DATA]
        return t.PluginInfo(name="{{name}}", version="0.1.0", stages=stages, capabilities=[])

    def connect(self, session):
        return proceed()

    def helo(self, session, name):
        return proceed()

    def mail_from(self, session, sender, params):
        return proceed()

    def rcpt_to(self, session, envelope, recipient, params):
        domain = recipient.rpartition("@")[2]
        blocked = {d.lower() for d in host.config_list("blocked-domains")}
        if domain.lower() in blocked:
            return reject(550, "5.7.1", f"No mail for {domain} here")
        return proceed()

    def data(self, session, envelope, message):
        stamp = t.Edit_AddHeader(t.HeaderField(name="X-Checked-By", value="{{name}}"))
        return proceed([stamp])

    def deliver(self, delivery, envelope, message):
        return proceed()

    def retrieve(self, retrieval, message):
        return proceed()
