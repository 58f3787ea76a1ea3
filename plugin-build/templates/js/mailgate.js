// mailgate.js: helpers for mailgate plugins in JavaScript (contract mailgate:plugin@0.2.1),
// written by `mailgate plugin new` beside app.js: `import * as mg from './mailgate.js';`.
import { configGet, configList, configJson, log as hostLog } from 'mailgate:plugin/host@0.2.1';
import * as host from 'mailgate:plugin/host@0.2.1';
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

/**
 * A host call's error as text. The bindings throw an Error whose `payload` is the contract's
 * variant (`{ tag: 'failed', val: 'kv store ...: connection refused' }`), and whose message only
 * says `[object Object]`; this reads the variant.
 */
export function errorText(e) {
  const value = e !== null && typeof e === 'object' && 'payload' in e ? e.payload : e;
  if (value !== null && typeof value === 'object' && 'tag' in value) {
    if (value.tag === 'failed') return String(value.val);
    if (value.tag === 'not-found') return 'not found';
    const inner = value.val !== null && typeof value.val === 'object' ? errorText(value.val) : value.val;
    return inner === undefined ? value.tag : `${value.tag}: ${inner}`;
  }
  return e instanceof Error ? e.message : String(value);
}

/** An Error that reads as its text in logs and template strings, keeping the variant. */
export class HostError extends Error {
  constructor(what, e) {
    super(`${what}: ${errorText(e)}`);
    this.name = 'HostError';
    this.payload = e !== null && typeof e === 'object' && 'payload' in e ? e.payload : e;
  }
}

function textual(what, call) {
  return (...args) => {
    try {
      return call(...args);
    } catch (e) {
      throw new HostError(what, e);
    }
  };
}

/** The kv store, DNS and files: as the host's, but what they throw reads as text. */
export const kvGet = textual('kv', host.kvGet);
export const kvSet = textual('kv', host.kvSet);
export const kvDelete = textual('kv', host.kvDelete);
export const kvIncr = textual('kv', host.kvIncr);
export const dnsLookup = textual('dns', host.dnsLookup);
export const fileRead = textual('file', host.fileRead);
