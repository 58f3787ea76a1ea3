// {{name}}: refuses recipients at the domains listed in `blocked-domains` and stamps every
// accepted message with `X-Checked-By: {{name}}`.
//
// Build: `mailgate plugin build` (componentize-js; the component lands in target/plugin.wasm);
// test: `mailgate test cases`. Export an object per stage you want, named after it (connect,
// helo, mailFrom, rcptTo, data, deliver, retrieve) with a `handle` method: only those stages
// are exported and called. `info.describe` says who the plugin is and which config keys it
// takes. console.log and uncaught exceptions go to the gateway log.
import { configList } from 'mailgate:plugin/host@0.2.0';
import { addHeader } from 'mailgate:plugin/edits@0.2.0';

function reject(code, enhanced, text) {
  const [cls, subject, detail] = enhanced.split('.').map(Number);
  return { tag: 'reject', val: { code, enhanced: { class: cls, subject, detail }, lines: [text] } };
}

export const info = {
  describe() {
    const blocked = {
      name: 'blocked-domains', valueType: 'string-list', default: '[]',
      doc: 'recipient domains refused at RCPT', required: false,
    };
    return { name: '{{name}}', version: '0.1.0', capabilities: [], config: [blocked] };
  },
};

export const rcptTo = {
  handle(_session, _envelope, recipient, _params) {
    const domain = recipient.slice(recipient.lastIndexOf('@') + 1);
    const blocked = configList('blocked-domains').map((d) => d.toLowerCase());
    if (blocked.includes(domain.toLowerCase())) return reject(550, '5.7.1', `No mail for ${domain} here`);
    return { tag: 'continue' };
  },
};

export const data = {
  handle(_session, _envelope, _message) {
    addHeader('X-Checked-By', '{{name}}');
    return { tag: 'continue' };
  },
};
