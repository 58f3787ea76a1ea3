// mailgate.js: helpers for mailgate plugins in JavaScript (contract mailgate:plugin@0.2.1),
// written by `mailgate plugin new` beside app.js: `import * as mg from './mailgate.js';`.
import { configGet, configList, configJson, log as hostLog } from 'mailgate:plugin/host@0.2.1';
import * as edits from 'mailgate:plugin/edits@0.2.1';

/** An SMTP reply; `enhanced` is "5.7.1" or "" for none. */
export function reply(code, enhanced, text) {
  const parts = enhanced ? enhanced.split('.').map(Number) : [];
  const status = parts.length === 3 && parts.every(Number.isInteger)
    ? { class: parts[0], subject: parts[1], detail: parts[2] }
    : undefined;
  return { code, enhanced: status, lines: [text] };
}

/** Verdicts. */
export const proceed = () => ({ tag: 'continue' });
export const accept = () => ({ tag: 'accept' });
export const reject = (code, enhanced, text) => ({ tag: 'reject', val: reply(code, enhanced, text) });
export const tempfail = (code, enhanced, text) => ({ tag: 'tempfail', val: reply(code, enhanced, text) });
export const disconnect = (code, enhanced, text) => ({ tag: 'disconnect', val: reply(code, enhanced, text) });
export const discard = () => ({ tag: 'discard' });
export const quarantine = (reason) => ({ tag: 'quarantine', val: reason });
export const hide = () => ({ tag: 'hide' });

/** Edits: asked for during the call, applied when it returns. */
export const { addHeader, insertHeader, setHeader, removeHeader, replaceBody, replacePart,
  removePart, appendFooter, changeSender, addRecipient, removeRecipient, defer } = edits;
export const reroute = (host, port) => edits.reroute({ host, port });

/** What `info.describe` returns, and one declared config key. */
export const info = (name, version, capabilities = [], config = []) => ({ name, version, capabilities, config });
export const configKey = (name, valueType, doc, defaultValue = undefined, required = false) =>
  ({ name, valueType, default: defaultValue, doc, required });

/** Config: text by dotted key (or `fallback`), a number, a list, the whole table. */
export const config = (key, fallback = undefined) => configGet(key) ?? fallback;
export function configNumber(key, fallback) {
  const n = Number(configGet(key));
  return Number.isFinite(n) ? n : fallback;
}
export const list = (key) => configList(key);
export const table = () => JSON.parse(configJson() || '{}');

/** The decoded value of the first header field named `name`, or undefined. */
export const header = (message, name) => message.header(name)[0]?.decoded;
/** The domain of an address, lower case. */
export const domainOf = (address) => address.slice(address.lastIndexOf('@') + 1).toLowerCase();
/** A line in the gateway log. */
export const log = (message, level = 'info') => hostLog(level, message, []);
