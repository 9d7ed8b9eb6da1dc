// IAM authorization of the control-plane calls made by the in-process Lambda
// (--lambda-role-policy FILE: the Lambda role's identity-based policy).
//
// AWS authorizes each IoT API call as one IAM action (`iot:<Operation>`) on the ARN of the
// resource type the Service Authorization Reference lists for that action:
//   https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsiot.html
// (see also the AWS IoT developer guide, "How AWS IoT works with IAM":
//   https://docs.aws.amazon.com/iot/latest/developerguide/security_iam_service-with-iam.html).
// An action without a resource type there is authorized against "*" only: a statement must
// name Resource "*" to allow it. OPERATIONS below is that table for the operations iot-sim
// implements; an operation missing from it is denied to the Lambda (fail closed), so a test
// can never pass on a permission nobody checked.
//
// Evaluation is IAM's for a single identity-based policy: default deny, an Allow statement
// whose Action and Resource match allows, an explicit Deny wins. `*` and `?` are wildcards
// in both; actions are case-insensitive, resources case-sensitive. Condition, NotAction,
// NotResource and Principal are not modelled: a role policy that uses them is refused at
// start, rather than evaluated differently from AWS.
//
// The Lambda's calls are recognised by the access key of the credentials the sim puts in
// its environment (LAMBDA_ACCESS_KEY_ID), as AWS Lambda does with the role's session
// credentials. Calls with any other key (the operator's aws CLI) are not authorized, as
// before.

import fs from 'node:fs';
import { AwsError } from './errors.js';
import { parsePolicy, evaluate } from './policy.js';

export { partitionOf } from './registry.js';

export const LAMBDA_ACCESS_KEY_ID = 'ASIAIOTSIMLAMBDAROLE';
export const LAMBDA_ROLE_NAME = 'iot-sim-lambda-role';

/**
 * Operation -> {action, type, name(req)}: the IAM action, the resource type (null: "*") and
 * the resource name within that type taken from the request {params, query, body, headers}.
 * Resource types and their ARN forms, from the Service Authorization Reference (AWS IoT,
 * "Resource types defined by AWS IoT"):
 *   cert     arn:${Partition}:iot:${Region}:${Account}:cert/${CertificateId}
 *   cacert   arn:${Partition}:iot:${Region}:${Account}:cacert/${CACertificateId}
 *   thing    arn:${Partition}:iot:${Region}:${Account}:thing/${ThingName}
 *   policy   arn:${Partition}:iot:${Region}:${Account}:policy/${PolicyName}
 *   rule     arn:${Partition}:iot:${Region}:${Account}:rule/${RuleName}
 *   topic    arn:${Partition}:iot:${Region}:${Account}:topic/${TopicName}
 */
const certOf = (arn) => (/:cert\/([0-9a-f]{64})$/.exec(arn || '') || [])[1] ?? String(arn);
export const OPERATIONS = {
  GetRegistrationCode: { action: 'iot:GetRegistrationCode', type: null },
  DescribeCACertificate: { action: 'iot:DescribeCACertificate', type: 'cacert', name: (r) => r.params.id },
  UpdateCACertificate: { action: 'iot:UpdateCACertificate', type: 'cacert', name: (r) => r.params.id },
  DescribeCertificate: { action: 'iot:DescribeCertificate', type: 'cert', name: (r) => r.params.id },
  UpdateCertificate: { action: 'iot:UpdateCertificate', type: 'cert', name: (r) => r.params.id },
  DeleteCertificate: { action: 'iot:DeleteCertificate', type: 'cert', name: (r) => r.params.id },
  CreatePolicy: { action: 'iot:CreatePolicy', type: 'policy', name: (r) => r.params.name },
  GetPolicy: { action: 'iot:GetPolicy', type: 'policy', name: (r) => r.params.name },
  DeletePolicy: { action: 'iot:DeletePolicy', type: 'policy', name: (r) => r.params.name },
  // AttachPolicy: resource types cert and thinggroup, i.e. the *target*; the policy being
  // attached is not a resource of this action (iot-sim models certificate targets only).
  AttachPolicy: { action: 'iot:AttachPolicy', type: 'cert', name: (r) => certOf(r.body.target) },
  DetachPolicy: { action: 'iot:DetachPolicy', type: 'cert', name: (r) => certOf(r.body.target) },
  AttachPrincipalPolicy: { action: 'iot:AttachPrincipalPolicy', type: 'cert', name: (r) => certOf(r.headers['x-amzn-iot-principal']) },
  ListAttachedPolicies: { action: 'iot:ListAttachedPolicies', type: 'cert', name: (r) => certOf(r.params.target) },
  CreateThing: { action: 'iot:CreateThing', type: 'thing', name: (r) => r.params.name },
  DescribeThing: { action: 'iot:DescribeThing', type: 'thing', name: (r) => r.params.name },
  UpdateThing: { action: 'iot:UpdateThing', type: 'thing', name: (r) => r.params.name },
  DeleteThing: { action: 'iot:DeleteThing', type: 'thing', name: (r) => r.params.name },
  ListThingPrincipals: { action: 'iot:ListThingPrincipals', type: 'thing', name: (r) => r.params.name },
  ListThings: { action: 'iot:ListThings', type: null },
  // AttachThingPrincipal is authorized on the certificate (the principal), not on the thing.
  AttachThingPrincipal: { action: 'iot:AttachThingPrincipal', type: 'cert', name: (r) => certOf(r.headers['x-amzn-principal']) },
  // DetachThingPrincipal, its counterpart, likewise on the certificate being detached.
  DetachThingPrincipal: { action: 'iot:DetachThingPrincipal', type: 'cert', name: (r) => certOf(r.headers['x-amzn-principal']) },
  // The data plane's Publish (POST /topics/{topic}) is the action iot:Publish on the topic,
  // resource type topic: arn:${Partition}:iot:${Region}:${Account}:topic/${TopicName}.
  Publish: { action: 'iot:Publish', type: 'topic', name: (r) => r.params.topic },
  GetTopicRule: { action: 'iot:GetTopicRule', type: 'rule', name: (r) => r.params.name },
  CreateTopicRule: { action: 'iot:CreateTopicRule', type: 'rule', name: (r) => r.params.name },
  ReplaceTopicRule: { action: 'iot:ReplaceTopicRule', type: 'rule', name: (r) => r.params.name },
  DeleteTopicRule: { action: 'iot:DeleteTopicRule', type: 'rule', name: (r) => r.params.name }
};

/** Parse and validate an IAM identity-based policy text; throws Error when unsupported. */
export function parseRolePolicy (text) {
  let doc;
  try { doc = JSON.parse(text); } catch (e) { throw new Error(`the role policy is not valid JSON: ${e.message}`); }
  const statements = Array.isArray(doc?.Statement) ? doc.Statement : [doc?.Statement].filter(Boolean);
  for (const s of statements) {
    for (const k of ['Condition', 'NotAction', 'NotResource', 'Principal', 'NotPrincipal']) {
      if (s && s[k] !== undefined) throw new Error(`the role policy uses ${k}, which iot-sim does not evaluate`);
    }
  }
  try { return { doc, compiled: parsePolicy(JSON.stringify(doc)) }; } catch (e) { throw new Error(`the role policy is invalid: ${e.message}`); }
}

export class Iam {
  /**
   * @param {object} o
   * @param {string} o.file the role policy file
   * @param {import('./registry.js').Registry} o.registry
   */
  constructor ({ file, registry }) {
    this.registry = registry;
    this.file = file;
    this.policy = parseRolePolicy(fs.readFileSync(file, 'utf8'));
  }

  /** The resource ARN an operation is authorized against, or '*'. */
  resourceArn (op, req) {
    const entry = OPERATIONS[op];
    if (!entry || entry.type === null) return '*';
    return this.registry.arn(entry.type, entry.name(req));
  }

  /**
   * Throws AccessDeniedException (HTTP 403) unless the role policy allows `op` on its
   * resource. Returns {action, resource} of the decision.
   */
  authorize (op, req, functionName = 'lambda') {
    const entry = OPERATIONS[op];
    const action = entry ? entry.action : `iot:${op}`;
    const resource = this.resourceArn(op, req);
    const who = `arn:${this.registry.partition}:sts::${this.registry.accountId}:assumed-role/${LAMBDA_ROLE_NAME}/${functionName}`;
    let why = null;
    if (!entry) {
      why = `because iot-sim has no IAM resource table entry for ${action} (not authorized for the Lambda)`;
    } else {
      const verdict = decide(this.policy.compiled, action, resource);
      if (verdict === 'deny') why = 'with an explicit deny in an identity-based policy';
      else if (verdict !== 'allow') why = `because no identity-based policy allows the ${action} action`;
    }
    if (why) {
      throw new AwsError('AccessDeniedException',
        `User: ${who} is not authorized to perform: ${action} on resource: ${resource} ${why}`);
    }
    return { action, resource };
  }
}

/** 'allow', 'deny' (an explicit Deny matched) or 'implicit' (no Allow matched). */
export function decide (compiled, action, resource) {
  let allowed = false;
  for (const s of compiled) {
    if (!evaluate([[{ ...s, effect: 'Allow' }]], action, resource, {})) continue;
    if (s.effect === 'Deny') return 'deny';
    allowed = true;
  }
  return allowed ? 'allow' : 'implicit';
}

/**
 * Static check of a role policy document against OPERATIONS: every iot: action it allows
 * must be in the table, and each statement naming it must name a resource of the action's
 * resource type (or "*"); every resource of a statement must be of a type one of its
 * actions is authorized on. Returns a list of problems (empty: consistent).
 */
export function checkRolePolicy (doc) {
  const problems = [];
  const byAction = new Map(Object.values(OPERATIONS).map((e) => [e.action.toLowerCase(), e]));
  const typeOf = (arn) => {
    if (arn === '*') return '*';
    const m = /^arn:[\w-]+:iot:[^:]*:[^:]*:([a-z]+)\//.exec(arn);
    return m ? m[1] : null;
  };
  for (const s of [doc.Statement].flat()) {
    const actions = [s.Action].flat().filter((a) => /^iot:/i.test(a));
    if (actions.length === 0) continue;
    const resources = [s.Resource].flat();
    const types = resources.map(typeOf);
    const usedTypes = new Set();
    for (const a of actions) {
      const e = byAction.get(a.toLowerCase());
      if (!e) { problems.push(`${s.Sid ?? 'statement'}: ${a} is not in iot-sim's IAM table`); continue; }
      const want = e.type ?? '*';
      usedTypes.add(want);
      if (!types.includes(want) && !types.includes('*')) {
        problems.push(`${s.Sid ?? 'statement'}: ${a} is authorized on resource type ${want}, but the statement names only ${[...new Set(types)].join(', ')}`);
      }
    }
    resources.forEach((r, i) => {
      if (types[i] !== '*' && !usedTypes.has(types[i])) {
        problems.push(`${s.Sid ?? 'statement'}: resource ${r} (type ${types[i]}) is not a resource of ${actions.join(', ')}`);
      }
    });
  }
  return problems;
}
