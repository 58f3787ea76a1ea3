// greylist: a sender/recipient policy written in JavaScript (componentize-js).
//
// The first attempt from a (client IP, sender, recipient) triple gets 451 4.7.1; a retry after
// `delay-seconds` (default 300) is accepted, and the triple is then remembered for `pass-days`
// (default 36) so later mail passes at once. State lives in the gateway's persistent key-value
// store (the `kv` capability, which the config must grant).
//
// Config: delay-seconds = 300, pass-days = 36, skip-authenticated = true.
import { configGet, kvGet, kvSet, log, nowMs } from 'mailgate:plugin/host@0.1.0';

const proceed = () => ({ verdict: { tag: 'continue' }, edits: [] });

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
    verdict: {
      tag: 'tempfail',
      val: {
        code: 451,
        enhanced: { class: 4, subject: 7, detail: 1 },
        lines: [`Greylisted: please try again in ${delay} seconds`],
      },
    },
    edits: [],
  };
}

export const handler = {
  describe() {
    return { name: 'greylist', version: '0.1.0', stages: ['rcpt-to'], capabilities: ['kv'] };
  },
  connect(_session) { return proceed(); },
  helo(_session, _name) { return proceed(); },
  mailFrom(_session, _sender, _params) { return proceed(); },
  rcptTo(session, envelope, recipient, _params) {
    if (session.authUser !== undefined && setting('skip-authenticated', true)) return proceed();
    const delay = setting('delay-seconds', 300);
    const passDays = setting('pass-days', 36);
    const key = `${session.peerIp}|${envelope.sender.toLowerCase()}|${recipient.toLowerCase()}`;
    const now = Math.floor(Number(nowMs()) / 1000);
    let seen;
    try {
      seen = kvGet(key);
    } catch (e) {
      // No store (capability not granted): fail open, and say so.
      log('warn', `greylist store unavailable: ${e}`, []);
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
  data(_session, _envelope, _message) { return proceed(); },
  deliver(_delivery, _envelope, _message) { return proceed(); },
  retrieve(_retrieval, _message) { return proceed(); },
};
