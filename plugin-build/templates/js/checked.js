// Written by `mailgate plugin build` beside app.js for the build, then removed: app.js's
// stages and info, with what their methods return checked, so that a forgotten `return` or a
// wrong value is named in the plugin's own terms instead of failing deep in the bindings.
import * as app from './app.js';

const TAGS = ['continue', 'accept', 'reject', 'tempfail', 'disconnect', 'discard', 'quarantine', 'hide'];
// The verdicts that carry a value: a reply, or quarantine's reason.
const WITH_VALUE = ['reject', 'tempfail', 'disconnect', 'quarantine'];
const EXPECTED_VERDICT =
  'expected a verdict like {tag: "accept"} (mg.proceed(), mg.accept(), mg.reject(550, "5.7.1", text), ' +
  'mg.tempfail(451, "4.7.1", text), mg.disconnect(...), mg.discard(), mg.quarantine(reason) or mg.hide(); ' +
  'see docs/plugins.md)';

function shown(value) {
  if (value === undefined) return 'undefined (is there a way through it without `return`?)';
  if (typeof value === 'function') return 'a function';
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text;
  } catch (_) {
    return String(value);
  }
}

// What is wrong with a handler's result, or null.
function verdictProblem(verdict) {
  if (verdict === null || typeof verdict !== 'object') return `returned ${shown(verdict)}`;
  if (!TAGS.includes(verdict.tag)) return `returned ${shown(verdict)}, whose tag is not a verdict's`;
  if (WITH_VALUE.includes(verdict.tag) && verdict.val === undefined) {
    return `returned ${shown(verdict)}, a ${verdict.tag} without its val`;
  }
  return null;
}

function checkedStage(name, stage) {
  if (stage === null || typeof stage !== 'object' || typeof stage.handle !== 'function') {
    throw new TypeError(`app.js exports ${name} as ${shown(stage)}; expected an object with a handle method`);
  }
  return {
    handle(...args) {
      const verdict = stage.handle(...args);
      const problem = verdictProblem(verdict);
      if (problem !== null) throw new TypeError(`${name} handler ${problem}; ${EXPECTED_VERDICT}`);
      return verdict;
    },
  };
}

function checkedInfo(info) {
  if (info === null || typeof info !== 'object' || typeof info.describe !== 'function') {
    throw new TypeError(`app.js exports info as ${shown(info)}; expected an object with a describe method`);
  }
  return {
    describe() {
      const described = info.describe();
      if (described === null || typeof described !== 'object' || typeof described.name !== 'string') {
        throw new TypeError(
          `info.describe returned ${shown(described)}; expected mg.info(name, version, capabilities, config) (see docs/plugins.md)`,
        );
      }
      return described;
    },
  };
}

// The exports, one line each, follow.
