// greylist: a sender/recipient policy written in JavaScript (componentize-js).
//
// The first attempt from a (client IP, sender, recipient) triple gets 451 4.7.1; a retry after
// `delay-seconds` (default 300) is accepted, and the triple is then remembered for `pass-days`
// (default 36) so later mail passes at once. State lives in the gateway's persistent key-value
// store (the `kv` capability, which the config must grant).
//
// Config: delay-seconds = 300, pass-days = 36, skip-authenticated = true.
import { configGet, kvGet, kvSet, log, nowMs } from 'mailgate:plugin/host@0.2.1';

const proceed = () => ({ tag: 'continue' });

// A host call's error as text. The bindings throw an Error whose `payload` is the contract's
// variant ({ tag: 'failed', val: 'kv store ...: connection refused' }); its own message only
// says `[object Object]`.
function errorText(e) {
  const value = e !== null && typeof e === 'object' && 'payload' in e ? e.payload : e;
  if (value !== null && typeof value === 'object' && 'tag' in value) {
    if (value.tag === 'failed') return String(value.val);
    return value.val === undefined ? value.tag : `${value.tag}: ${value.val}`;
  }
  return e instanceof Error ? e.message : String(value);
}

function setting(key, fallback) {
  const value = configGet(key);
  if (value === undefined) return fallback;
  if (value === 'true') return true;
  if (value === 'false') return false;
  const number = Number(value);
  return Number.isFinite(number) ? number : fallback;
}

function greylisted(delay) {
  return {
    tag: 'tempfail',
    val: {
      code: 451,
      enhanced: { class: 4, subject: 7, detail: 1 },
      lines: [`Greylisted: please try again in ${delay} seconds`],
    },
  };
}

const key = (name, valueType, defaultValue, doc) => ({ name, valueType, default: defaultValue, doc, required: false });

export const info = {
  describe() {
    const config = [
      key('delay-seconds', 'integer', '300', 'how long a new triple is refused'),
      key('pass-days', 'integer', '36', 'how long a triple that passed is remembered'),
      key('skip-authenticated', 'boolean', 'true', 'let authenticated clients through'),
    ];
    return { name: 'greylist', version: '0.2.0', capabilities: ['kv'], config };
  },
};

export const rcptTo = {
  handle(session, envelope, recipient, _params) {
    if (session.authUser !== undefined && setting('skip-authenticated', true)) return proceed();
    const delay = setting('delay-seconds', 300);
    const passDays = setting('pass-days', 36);
    const key = `${session.peerIp}|${envelope.sender.toLowerCase()}|${recipient.toLowerCase()}`;
    const now = Math.floor(Number(nowMs()) / 1000);
    let seen;
    try {
      seen = kvGet(key);
    } catch (e) {
      // No store (capability not granted, or the store is down): fail open, and say so.
      log('warn', `greylist store unavailable: ${errorText(e)}`, []);
      return proceed();
    }
    if (seen === undefined) {
      kvSet(key, String(now), delay + 86400);
      return greylisted(delay);
    }
    const first = Number(seen);
    if (now - first < delay) return greylisted(delay - (now - first));
    // Passed once: remember the triple for a while so it is not delayed again.
    kvSet(key, String(first), passDays * 86400);
    return proceed();
  },
};
