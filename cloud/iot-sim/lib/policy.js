// AWS IoT policy documents: validation (CreatePolicy) and evaluation (MQTT authorization).
//
// Evaluation follows IAM's rule as AWS IoT applies it: a request is allowed when at least
// one statement of the attached policies allows it and none denies it (explicit Deny wins,
// default is deny). Actions and resources are matched case-insensitively for actions and
// case-sensitively for resources, with `*` (any run of characters, `/` included, possibly
// none) and `?` (one character), anywhere in the resource, also next to a variable: with thing
// gw1, `topic/dt/${iot:Connection.Thing.ThingName}-*/*` matches `topic/dt/gw1-s1/x` but not
// `topic/dt/gw1/x` or `topic/dt/gw10/x`. Policy variables `${iot:Connection.Thing.ThingName}`
// and `${iot:ClientId}` are substituted as literal text before matching (a `*` in a value is
// not a wildcard); `${*}`, `${?}` and `${$}` are the literal characters, as in IAM. A statement
// resource with a variable that cannot be resolved (e.g. no thing attached) matches nothing.
// MQTT wildcards `+` and `#` in a policy resource are literal characters, as in AWS.
// `Condition` blocks are not modelled: a statement that has one is ignored (see README).

import { AwsError } from './errors.js';

const VAR_RE = /\$\{([^}]*)\}/g;
const LITERALS = new Set(['*', '?', '$']); // ${*} ${?} ${$}: the character itself

/** Parse and validate a policy document string; throws MalformedPolicyException. */
export function parsePolicy (text) {
  const bad = (m) => new AwsError('MalformedPolicyException', m);
  if (typeof text !== 'string' || text.length === 0) throw bad('Policy document is empty');
  if (Buffer.byteLength(text) > 2048 * 4) throw bad('Policy document is too large');
  let doc;
  try { doc = JSON.parse(text); } catch { throw bad('Policy document is not valid JSON'); }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw bad('Policy document must be a JSON object');
  if (doc.Version !== undefined && doc.Version !== '2012-10-17' && doc.Version !== '2008-10-17') {
    throw bad('Policy document has an unsupported Version');
  }
  const statements = Array.isArray(doc.Statement) ? doc.Statement : (doc.Statement ? [doc.Statement] : []);
  if (statements.length === 0) throw bad('Policy document has no Statement');
  for (const s of statements) {
    if (!s || typeof s !== 'object') throw bad('Statement must be an object');
    if (s.Effect !== 'Allow' && s.Effect !== 'Deny') throw bad('Statement Effect must be Allow or Deny');
    if (!validList(s.Action)) throw bad('Statement Action is missing or invalid');
    if (!validList(s.Resource)) throw bad('Statement Resource is missing or invalid');
  }
  return compile(statements);
}

function validList (v) {
  if (typeof v === 'string') return v.length > 0;
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && x.length > 0);
}

const toList = (v) => (Array.isArray(v) ? v : [v]);

function compile (statements) {
  return statements.map((s) => ({
    effect: s.Effect,
    hasCondition: s.Condition !== undefined,
    actions: toList(s.Action).map((a) => globRegex(a, 'i')),
    resources: toList(s.Resource)
  }));
}

function escapeRe (s) { return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'); }

/** Glob with `*` and `?` to an anchored RegExp. */
function globRegex (glob, flags = '') {
  let re = '';
  for (const ch of glob) {
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else re += escapeRe(ch);
  }
  return new RegExp('^' + re + '$', flags);
}

/**
 * Resource pattern with variables resolved as literal text; null when a variable is
 * unknown or has no value for this connection.
 */
function resourceRegex (pattern, vars) {
  let re = '';
  let last = 0;
  let unresolved = false;
  pattern.replace(VAR_RE, (m, name, offset) => {
    re += globRegex(pattern.slice(last, offset)).source.slice(1, -1);
    const v = LITERALS.has(name) ? name : vars[name];
    if (typeof v !== 'string') unresolved = true;
    else re += escapeRe(v);
    last = offset + m.length;
    return m;
  });
  if (unresolved) return null;
  re += globRegex(pattern.slice(last)).source.slice(1, -1);
  return new RegExp('^' + re + '$');
}

/**
 * @param {Array<Array<object>>} policies compiled statements of each attached policy
 * @param {string} action e.g. 'iot:Publish'
 * @param {string} resource full ARN, e.g. arn:aws:iot:us-east-1:123456789012:topic/dt/x
 * @param {object} vars policy variable values, keyed by variable name without `${}`
 * @returns {boolean} allowed
 */
export function evaluate (policies, action, resource, vars) {
  let allowed = false;
  for (const statements of policies) {
    for (const s of statements) {
      if (s.hasCondition) continue;
      if (!s.actions.some((re) => re.test(action))) continue;
      const hit = s.resources.some((r) => {
        const re = resourceRegex(r, vars);
        return re !== null && re.test(resource);
      });
      if (!hit) continue;
      if (s.effect === 'Deny') return false;
      allowed = true;
    }
  }
  return allowed;
}
