// Topic rules: a subset of the AWS IoT SQL and the `lambda` action.
//
//   SELECT <item>[, <item>]... FROM '<topic filter>' [WHERE <field>[.<field>] = <literal>]
//   <item>: *  |  <field>[.<field>] [AS <name>]  |  <function> AS <name>  |  <literal> AS <name>
//   <function>: principal() | clientid() | topic() | topic(<n>)
//   <literal>: '<string>' | <number> | true | false
//
// The SELECT result is the Lambda's event: `*` copies the message's JSON payload, each other
// item adds (or, with no value, removes) one key, in the order written. WHERE compares a
// field of the incoming payload. A literal item adds its constant: the SELECT clause reference
// (https://docs.aws.amazon.com/iot/latest/developerguide/iot-sql-select.html) has
// `SELECT *, 15 as speed` add "speed":15 to the incoming payload, and string literals are
// single-quoted as in its WHERE examples (`color <> 'red'`,
// https://docs.aws.amazon.com/iot/latest/developerguide/iot-sql-where.html); the sim takes a
// string without `'` or `,` (the item list is split at commas). The functions, as the AWS IoT
// SQL reference gives them
// (https://docs.aws.amazon.com/iot/latest/developerguide/iot-sql-functions.html):
//   principal()  the principal the publisher authenticated with: for a client connected with
//                an X.509 certificate, the certificate id (64 hex characters)
//   clientid()   the MQTT client id of the publisher
//   topic()      the topic the message was published to; topic(n) its n-th level, from 1
// For messages no MQTT client published (the sim's own events, data-plane Publish calls,
// /_sim/publish) principal() and clientid() have no value here, and their keys are left out.
//
// The handler mapped to the action's functionArn (--lambda ARN=PATH) runs in this process
// after --lambda-delay-ms; its AWS SDK clients reach the sim's own API through
// AWS_ENDPOINT_URL_IOT and AWS_ENDPOINT_URL_IOT_DATA_PLANE, which the sim sets before loading
// any handler, so the code under test is exactly the shipped Lambda. Other action types are
// stored but not run.

import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { AwsError } from './errors.js';
import { topicMatches, validFilter } from './topics.js';

const SQL_RE = /^\s*SELECT\s+(.+?)\s+FROM\s+'([^']+)'\s*(?:WHERE\s+([A-Za-z_][\w.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|(-?\d+(?:\.\d+)?|true|false))\s*)?;?\s*$/is;
const FUNCTION_ITEM_RE = /^([A-Za-z_]\w*)\s*\(\s*([^)]*?)\s*\)(?:\s+AS\s+([A-Za-z_]\w*))?$/i;
const FIELD_ITEM_RE = /^([A-Za-z_][\w.]*)(?:\s+AS\s+([A-Za-z_]\w*))?$/i;
const LITERAL_ITEM_RE = /^(?:'([^',]*)'|(-?\d+(?:\.\d+)?)|(true|false))(?:\s+AS\s+([A-Za-z_]\w*))?$/i;
const FUNCTIONS = {
  principal: { args: 0 },
  clientid: { args: 0 },
  topic: { args: 1, optional: true }
};
const SUPPORTED = `SELECT *|<field> [AS <name>]|principal() AS <name>|clientid() AS <name>|topic([<n>]) AS <name>|'<string>' AS <name>|<number> AS <name>, ... FROM '<filter>' [WHERE <field> = "<value>"]`;

const sqlError = (why, sql) => new AwsError('SqlParseException', `${why} (iot-sim supports ${SUPPORTED}): ${sql}`);

function parseItem (text, sql) {
  if (text === '*') return { star: true };
  let m = FUNCTION_ITEM_RE.exec(text);
  if (m) {
    const fn = m[1].toLowerCase();
    const spec = FUNCTIONS[fn];
    if (!spec) throw sqlError(`function ${m[1]}() is not modelled`, sql);
    let arg;
    if (m[2] !== '') {
      if (spec.args === 0 || !/^[1-9]\d*$/.test(m[2])) throw sqlError(`invalid argument of ${fn}(): ${m[2]}`, sql);
      arg = Number(m[2]);
    } else if (spec.args > 0 && !spec.optional) {
      throw sqlError(`${fn}() needs an argument`, sql);
    }
    if (!m[3]) throw sqlError(`${fn}() needs AS <name>`, sql);
    return { fn, arg, name: m[3] };
  }
  m = LITERAL_ITEM_RE.exec(text);
  if (m) {
    if (!m[4]) throw sqlError(`the literal ${text} needs AS <name>`, sql);
    const value = m[1] !== undefined ? m[1] : m[2] !== undefined ? Number(m[2]) : m[3].toLowerCase() === 'true';
    return { literal: value, name: m[4] };
  }
  m = FIELD_ITEM_RE.exec(text);
  if (m) {
    const field = m[1].split('.');
    if (field.some((f) => f === '')) throw sqlError(`invalid field ${m[1]}`, sql);
    return { field, name: m[2] ?? field.at(-1) };
  }
  throw sqlError(`cannot parse the select item ${JSON.stringify(text)}`, sql);
}

/**
 * Parse the supported SQL subset; throws SqlParseException. Returns {filter, where, select}:
 * select is a list of {star:true} | {fn, arg, name} | {field, name} | {literal, name}.
 */
export function parseSql (sql) {
  const m = SQL_RE.exec(sql || '');
  if (!m || !validFilter(m[2])) throw sqlError('unsupported or invalid SQL', sql);
  const select = m[1].split(',').map((t) => parseItem(t.trim(), sql));
  if (select.filter((i) => i.star).length > 1) throw sqlError('* may appear once', sql);
  const where = m[3] ? { field: m[3].split('.'), value: m[4] ?? m[5] ?? m[6] } : null;
  return { filter: m[2], where, select };
}

function fieldValue (obj, pathParts) {
  let v = obj;
  for (const k of pathParts) {
    if (v === null || typeof v !== 'object') return undefined;
    v = v[k];
  }
  return v;
}

/** The value of a SQL function for a message on `topic` from `source` {clientId, principal}. */
export function callFunction (fn, arg, topic, source = {}) {
  switch (fn) {
    case 'principal': return source.principal || undefined;
    case 'clientid': return source.clientId || undefined;
    case 'topic': return arg === undefined ? topic : topic.split('/')[arg - 1];
    default: return undefined;
  }
}

/**
 * Whether a parsed rule matches a message, and its SELECT result: null when it does not
 * match, else the object the rule's actions get. `doc` is the parsed JSON payload.
 */
export function evaluateRule (q, topic, doc, source = {}) {
  if (!topicMatches(q.filter, topic)) return null;
  if (doc === undefined || doc === null || typeof doc !== 'object') return null; // non-JSON payloads are not modelled
  if (q.where && String(fieldValue(doc, q.where.field)) !== q.where.value) return null;
  const out = {};
  for (const item of q.select ?? [{ star: true }]) {
    if (item.star) { Object.assign(out, structuredClone(doc)); continue; }
    const v = 'literal' in item ? item.literal
      : item.fn ? callFunction(item.fn, item.arg, topic, source) : structuredClone(fieldValue(doc, item.field));
    if (v === undefined) delete out[item.name]; else out[item.name] = v;
  }
  return out;
}

export class RulesEngine {
  /**
   * @param {object} o
   * @param {import('./registry.js').Registry} o.registry
   * @param {Map<string,string>} o.lambdas functionArn -> path of the module exporting handler
   * @param {number} o.delayMs delay before a Lambda runs
   * @param {(msg:string)=>void} o.log
   */
  constructor ({ registry, lambdas, delayMs, log }) {
    this.registry = registry;
    this.lambdas = lambdas;
    this.delayMs = delayMs;
    this.log = log;
    this.enabled = true; // false: lambda actions are skipped (recorded as skipped)
    this.paused = false; // true: invocations are held, and run when unpaused
    this.held = [];
    this.handlers = new Map(); // functionArn -> Promise<handler>
    this.invocations = []; // bounded history, newest last
    this.denied = []; // control-plane calls of the Lambda refused by IAM (--lambda-role-policy), newest last
    this.pending = new Set(); // timers of scheduled invocations
    this.running = new Set(); // promises of running invocations
    this.parsed = new Map(); // rule name -> {sql, parsed}
  }

  parsedRule (name, rule) {
    let p = this.parsed.get(name);
    if (!p || p.sql !== rule.sql) { p = { sql: rule.sql, parsed: parseSql(rule.sql) }; this.parsed.set(name, p); }
    return p.parsed;
  }

  /**
   * Called for every message the broker routes (device publishes and the sim's own events).
   * `source`: the publishing client's {clientId, principal} (its certificate id), or {} for
   * messages no MQTT client published.
   */
  onMessage (topic, payload, source = {}) {
    const rules = this.registry.rules();
    if (rules.length === 0) return;
    let doc;
    let parsedOk = false;
    for (const [name, rule] of rules) {
      if (rule.ruleDisabled) continue;
      const q = this.parsedRule(name, rule);
      if (!topicMatches(q.filter, topic)) continue;
      if (!parsedOk) {
        parsedOk = true;
        try { doc = JSON.parse(payload.toString('utf8')); } catch { doc = undefined; }
      }
      const event = evaluateRule(q, topic, doc, source);
      if (event === null) continue;
      for (const action of rule.actions || []) {
        if (action.lambda && action.lambda.functionArn) this.schedule(name, action.lambda.functionArn, event);
      }
    }
  }

  schedule (ruleName, functionArn, event) {
    if (!this.enabled) {
      this.record({ ruleName, functionArn, skipped: 'lambda actions disabled' });
      return;
    }
    const file = this.lambdas.get(functionArn);
    if (!file) {
      this.record({ ruleName, functionArn, skipped: 'no --lambda mapping for this function ARN' });
      return;
    }
    if (this.paused) {
      this.held.push([ruleName, functionArn, event]);
      if (this.held.length > 10000) {
        const [r, f] = this.held.shift();
        this.record({ ruleName: r, functionArn: f, skipped: 'dropped: more than 10000 held invocations' });
      }
      return;
    }
    const timer = setTimeout(() => {
      this.pending.delete(timer);
      const p = this.invoke(ruleName, functionArn, file, structuredClone(event));
      this.running.add(p);
      p.finally(() => this.running.delete(p));
    }, this.delayMs);
    this.pending.add(timer);
  }

  /** Pause or resume Lambda invocations; resuming schedules the held ones in order. */
  setPaused (paused) {
    this.paused = paused;
    if (!paused) {
      const held = this.held;
      this.held = [];
      for (const [ruleName, functionArn, event] of held) this.schedule(ruleName, functionArn, event);
    }
  }

  loadHandler (functionArn, file) {
    let h = this.handlers.get(functionArn);
    if (!h) {
      h = import(pathToFileURL(path.resolve(file)).href).then((m) => {
        if (typeof m.handler !== 'function') throw new Error(`${file} does not export a handler function`);
        return m.handler;
      });
      this.handlers.set(functionArn, h);
    }
    return h;
  }

  async invoke (ruleName, functionArn, file, event) {
    const started = Date.now();
    const requestId = randomUUID();
    const entry = { ruleName, functionArn, requestId, startedAt: started, event };
    try {
      const handler = await this.loadHandler(functionArn, file);
      const context = {
        functionName: functionArn.split(':').pop(),
        invokedFunctionArn: functionArn,
        awsRequestId: requestId,
        getRemainingTimeInMillis: () => Math.max(0, 30000 - (Date.now() - started))
      };
      const result = await handler(event, context);
      Object.assign(entry, { ok: true, result: result === undefined ? null : result });
    } catch (e) {
      Object.assign(entry, { ok: false, error: String(e && e.stack ? e.stack : e) });
      this.log(`lambda ${functionArn} failed: ${e && e.message}`);
    }
    entry.durationMs = Date.now() - started;
    this.record(entry);
  }

  /** A Lambda control-plane call that IAM refused: {operation, message}. */
  recordDenial (entry) {
    this.denied.push({ time: Date.now(), ...entry });
    if (this.denied.length > 1000) this.denied.shift();
  }

  record (entry) {
    this.invocations.push({ time: Date.now(), ...entry });
    if (this.invocations.length > 1000) this.invocations.shift();
  }

  /** Cancel scheduled invocations and wait (bounded) for running ones. */
  async close () {
    for (const t of this.pending) clearTimeout(t);
    this.pending.clear();
    this.held = [];
    await Promise.race([Promise.allSettled([...this.running]), new Promise((r) => setTimeout(r, 2000).unref())]);
  }
}
