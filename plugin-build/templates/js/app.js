// {{name}}: refuses recipients at the domains listed in `blocked-domains` and stamps every
// accepted message with `X-Checked-By: {{name}}`.
//
// Build: `mailgate plugin build` (componentize-js; the component lands in target/plugin.wasm);
// test: `mailgate test cases`. Every stage must be defined; the host calls only those listed
// in describe().
import { configList } from 'mailgate:plugin/host@0.1.0';

const proceed = (edits = []) => ({ verdict: { tag: 'continue' }, edits });

function reject(code, enhanced, text) {
  const [cls, subject, detail] = enhanced.split('.').map(Number);
  const reply = { code, enhanced: { class: cls, subject, detail }, lines: [text] };
  return { verdict: { tag: 'reject', val: reply }, edits: [] };
}

export const handler = {
  describe() {
    return { name: '{{name}}', version: '0.1.0', stages: ['rcpt-to', 'data'], capabilities: [] };
  },
  connect(_session) { return proceed(); },
  helo(_session, _name) { return proceed(); },
  mailFrom(_session, _sender, _params) { return proceed(); },
  rcptTo(_session, _envelope, recipient, _params) {
    const domain = recipient.slice(recipient.lastIndexOf('@') + 1);
    const blocked = configList('blocked-domains').map((d) => d.toLowerCase());
    if (blocked.includes(domain.toLowerCase())) return reject(550, '5.7.1', `No mail for ${domain} here`);
    return proceed();
  },
  data(_session, _envelope, _message) {
    return proceed([{ tag: 'add-header', val: { name: 'X-Checked-By', value: '{{name}}' } }]);
  },
  deliver(_delivery, _envelope, _message) { return proceed(); },
  retrieve(_retrieval, _message) { return proceed(); },
};
