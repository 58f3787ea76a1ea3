// {{name}}: refuses recipients at the domains listed in `blocked-domains` and stamps every
// accepted message with `X-Checked-By: {{name}}`.
//
// Build: `mailgate plugin build` (componentize-js; the component lands in target/{{output}}.wasm);
// test: `mailgate test cases`. Export an object per stage you want, named after it (connect,
// helo, mailFrom, rcptTo, data, deliver, retrieve) with a `handle` method: only those stages
// are exported and called. mailgate.js holds the helpers (verdicts, edits, config, headers);
// console.log and uncaught exceptions go to the gateway log.
import * as mg from './mailgate.js';

export const info = {
  describe() {
    const blocked = mg.configKey('blocked-domains', 'string-list', 'recipient domains refused at RCPT', '[]');
    return mg.info('{{name}}', '0.1.0', [], [blocked]);
  },
};

export const rcptTo = {
  handle(_session, _envelope, recipient, _params) {
    const domain = mg.domainOf(recipient);
    if (mg.list('blocked-domains').some((d) => d.toLowerCase() === domain)) {
      return mg.reject(550, '5.7.1', `No mail for ${domain} here`);
    }
    return mg.proceed();
  },
};

export const data = {
  handle(_session, _envelope, _message) {
    mg.addHeader('X-Checked-By', '{{name}}');
    return mg.proceed();
  },
};
