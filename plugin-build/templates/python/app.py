"""{{name}}: refuses recipients at the domains listed in `blocked-domains` and stamps every
accepted message with `X-Checked-By: {{name}}`.

Build: `mailgate plugin build` (componentize-py; the component lands in target/{{output}}.wasm);
test: `mailgate test cases`. Define a class per stage you want, named after it (Connect, Helo,
MailFrom, RcptTo, Data, Deliver, Retrieve) with a `handle` method: only those stages are
exported and called. `mailgate` (the helpers: verdicts, edits, config, headers) and `wit_world`
(the bindings) come with the build."""
import mailgate as mg
from wit_world import exports


class Info(exports.Info):
    def describe(self):
        blocked = mg.config_key("blocked-domains", "string-list", "recipient domains refused at RCPT", "[]")
        return mg.info("{{name}}", "0.1.0", config=[blocked])


class RcptTo(exports.RcptTo):
    def handle(self, session, envelope, recipient, params):
        domain = mg.domain_of(recipient)
        if domain in (d.lower() for d in mg.config_list("blocked-domains")):
            return mg.reject(550, "5.7.1", f"No mail for {domain} here")
        return mg.proceed()


class Data(exports.Data):
    def handle(self, session, envelope, message):
        mg.add_header("X-Checked-By", "{{name}}")
        return mg.proceed()
