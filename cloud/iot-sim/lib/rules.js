// Topic rules: the SQL subset `SELECT * FROM '<topic filter>' [WHERE <field> = "<value>"]`
// and the `lambda` action. A matching message's JSON payload is the Lambda's event, as in
// AWS. The handler mapped to the action's functionArn (--lambda ARN=PATH) runs in this
// process after --lambda-delay-ms; its AWS SDK clients reach the sim's own control API
// through AWS_ENDPOINT_URL_IOT, which the sim sets before loading any handler, so the code
// under test is exactly the shipped Lambda. Other action types are stored but not run.

import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { AwsError } from './errors.js';
import { topicMatches, validFilter } from './topics.js';

const SQL_RE = /^\s*SELECT\s+\*\s+FROM\s+'([^']+)'\s*(?:WHERE\s+([A-Za-z_][\w.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|(-?\d+(?:\.\d+)?|true|false))\s*)?;?\s*$/i;

/** Parse the supported SQL subset; throws SqlParseException. */
export function parseSql (sql) {
  const m = SQL_RE.exec(sql || '');
  if (!m || !validFilter(m[1])) {
    throw new AwsError('SqlParseException', `Unsupported or invalid SQL (iot-sim supports SELECT * FROM '<filter>' [WHERE <field> = "<value>"]): ${sql}`);
  }
  const where = m[2] ? { field: m[2].split('.'), value: m[3] ?? m[4] ?? m[5] } : null;
  return { filter: m[1], where };
}

function fieldValue (obj, pathParts) {
  let v = obj;
  for (const k of pathParts) {
    if (v === null || typeof v !== 'object') return undefined;
    v = v[k];
  }
  return v;
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

  /** Called for every message the broker routes (device publishes and the sim's own events). */
  onMessage (topic, payload) {
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
      if (doc === undefined || doc === null || typeof doc !== 'object') continue; // non-JSON payloads are not modelled
      if (q.where && String(fieldValue(doc, q.where.field)) !== q.where.value) continue;
      for (const action of rule.actions || []) {
        if (action.lambda && action.lambda.functionArn) this.schedule(name, action.lambda.functionArn, doc);
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
