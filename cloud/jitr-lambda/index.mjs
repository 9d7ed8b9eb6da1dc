// JITR, certificate-retirement and CA hand-over Lambda for gateway-agent devices. One
// handler, three triggers, told apart by what the rules' SELECT sets after the payload's own
// keys (see requestKind):
//  - a registration event (published by AWS IoT itself: no `request`, no `thingName`): JITR,
//    below;
//  - a retire request (the retire rule sets `thingName` and `request` = 'retire'): retirement
//    of a renewed thing's old certificate, see "Retirement" further down;
//  - a hand-over request (the hand-over rule sets `thingName` and `request` = 'handover'): a
//    thing asks to be handed over to a new registered CA, see "CA hand-over" further down.
//
// JITR trigger: the topic rule
//   SELECT * FROM '$aws/events/certificates/registered/#' WHERE certificateStatus = "PENDING_ACTIVATION"
// whose event is {certificateId, caCertificateId, timestamp, certificateStatus, awsAccountId,
// certificateRegistrationTimestamp}.
//
// For the certificate in the event it: describes the certificate, takes the thing name from
// the subject CN (validated against AWS's thing-name rule and the naming rule below), makes
// sure the thing belongs to the CA that issued the certificate (creating it bound to that CA
// if it does not exist), creates or reuses the policy for the certificate's role (with
// partition, region and account filled in), attaches the policy to the certificate, attaches
// the certificate to the thing, and activates the certificate LAST, so that by the time the
// device can authenticate it is also authorized.
// The role comes from the subject: `OU=gateway` (a gateway's own certificate) gets the
// gateway policy (gateway-policy.json: its own topics plus those of its shared-mode sensors,
// `<gateway thing>:<sensor id>`); any other certificate (a sensor) gets the device policy
// (device-policy.json: its own topics only).
//
// A thing belongs to a CA: the thing attribute `caCertificateId` records the registered CA
// that enrolled it. A certificate from any other CA for that thing is refused (not attached,
// not activated, whatever its status), and logged with both CA ids: no registered CA can
// take over another's things. A renewed certificate from the same CA is attached like the
// first. A thing moves to a new CA only when its own device asks for it over a certificate of
// its current CA ("CA hand-over" below), or by an operator with IAM rights (cloud/README.md,
// "CA hand-over"); never because a CA alone says so. A thing without the attribute (enrolled
// before it existed) is bound to the new certificate's CA only when every certificate
// attached to it was issued by that CA.
//
// Naming rule: `:` separates a gateway's thing name from its sensors' ids. A gateway
// certificate's CN may not contain `:`; a sensor thing named `<gateway>:<id>` is in that
// gateway's namespace, which belongs to the CA of thing `<gateway>` (the Lambda creates
// `<gateway>`, bound to the certificate's CA, when it does not exist yet). So the gateway
// policy's `<gateway>:*` reaches only things its own CA enrolled.
//
// Every step is idempotent, so a repeated event (AWS republishes it on each connect while
// the certificate is pending) converges to the same state. A certificate an operator made
// INACTIVE or REVOKED is left alone.
//
// A renewal: a new certificate from the thing's CA enrolls like the first and is attached
// to the same thing, so both are ACTIVE and attached until the device retires the old one;
// the handler then logs and returns `renewal: true`. Not while a certificate attached to
// the thing is INACTIVE or REVOKED (an operator's doing: a retired one is detached): the
// new one then stays PENDING_ACTIVATION and the handler returns `refused`.
//
// Retirement. Trigger: the topic rule
//   SELECT *, principal() AS newCertificateId, clientid() AS clientId, topic(2) AS thingName,
//   'retire' AS request FROM 'lifecycle/+/retire'
// A device that connected with its new certificate publishes {"oldCertificateId":"<id>"} to
// lifecycle/<thing>/retire (its policy allows only its own thing's topic). principal() is
// the certificate the request was published with, so the request proves the new
// certificate. The handler checks: both ids are certificate ids and differ; the client id is
// the thing name; the new certificate is ACTIVE, attached to the thing and issued by the
// thing's CA; the old one was registered before it, is attached to the same thing and was
// issued by the thing's CA or, after a hand-over, by the CA before it (attribute
// previousCaCertificateId). (A thing without `caCertificateId`: both from the same CA.)
// Then it makes the old certificate INACTIVE (a REVOKED one stays REVOKED)
// and detaches it from the thing, and publishes the outcome (QoS 1) to
//   lifecycle/<thing>/retire/accepted  {"oldCertificateId","status":"INACTIVE","detached":true}
//   lifecycle/<thing>/retire/rejected  {"oldCertificateId","reason"}
// A repeated request after success (the old certificate INACTIVE or REVOKED and no longer
// attached) is accepted again. AWS IoT closes the old certificate's connections within
// minutes of it leaving ACTIVE.
//
// CA hand-over (a CA rollover: the gateway's CA is replaced by a new one, registered with
// AWS IoT as usual). Trigger: the topic rule
//   SELECT *, principal() AS certificateId, clientid() AS clientId, topic(2) AS thingName,
//   'handover' AS request FROM 'lifecycle/+/handover'
// Before a device connects with a certificate of the new CA it publishes, over its CURRENT
// connection (a certificate of the thing's CA), {"caCertificateId":"<new CA's id>"} to
// lifecycle/<thing>/handover (its policy allows only its own thing's topic). principal() is
// the certificate the request was published with, so the request proves a certificate of the
// thing's current CA: the binding still can never be taken by a CA alone, only by a device
// holding an ACTIVE certificate of the thing's current CA, for its own thing (or by an
// operator with IAM rights). The handler checks: the client id is the thing name; the
// publishing certificate is ACTIVE and attached to the thing; the requested CA is a CA
// certificate registered in this account and ACTIVE (DescribeCACertificate); the publishing
// certificate was issued by the thing's CA (a thing without `caCertificateId`: the CA of the
// publishing certificate); for a sensor `<gateway>:<id>`, thing `<gateway>` already belongs
// to the requested CA (the namespace follows its gateway: the gateway is handed over first).
// Then UpdateThing (expectedVersion, so a concurrent change makes it look again) sets
// caCertificateId = the new CA and previousCaCertificateId = the old one, and it publishes
// (QoS 1)
//   lifecycle/<thing>/handover/accepted  {"caCertificateId","previousCaCertificateId"}
//   lifecycle/<thing>/handover/rejected  {"caCertificateId","reason"}
// A thing that already belongs to the requested CA is accepted again without a change, when
// the request comes over a certificate of that CA or of the previous one (a repeated
// request). From then on the new CA's certificates enroll onto the thing by JITR (a renewal)
// and the new certificate retires the old CA's one; the old CA's new certificates are refused.
//
// Configuration (environment): AWS_REGION (set by Lambda), POLICY_NAME (default
// gateway-agent-device), GATEWAY_POLICY_NAME (default gateway-agent-gateway). The partition
// (aws, aws-cn, aws-us-gov) comes from the function's own ARN (context.invokedFunctionArn);
// the account from the event (awsAccountId), falling back to the function's ARN. The IoT
// clients take endpoint and credentials from the standard SDK environment; iot-sim points
// them at itself through AWS_ENDPOINT_URL_IOT and AWS_ENDPOINT_URL_IOT_DATA_PLANE.
// IOT_DATA_ENDPOINT (deploy.sh sets it to the account's iot:Data-ATS endpoint, as the AWS
// CLI reference recommends for data-plane calls) is the data-plane endpoint when set.

import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import {
  IoTClient,
  DescribeCertificateCommand,
  DescribeCACertificateCommand,
  DescribeThingCommand,
  UpdateThingCommand,
  ListThingPrincipalsCommand,
  CreateThingCommand,
  CreatePolicyCommand,
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  UpdateCertificateCommand,
  DetachThingPrincipalCommand,
  ResourceAlreadyExistsException
} from '@aws-sdk/client-iot';
import { IoTDataPlaneClient, PublishCommand } from '@aws-sdk/client-iot-data-plane';

const POLICY_TEMPLATES = {
  device: readFileSync(new URL('./device-policy.json', import.meta.url), 'utf8'),
  gateway: readFileSync(new URL('./gateway-policy.json', import.meta.url), 'utf8')
};
export const DEFAULT_POLICY_NAMES = { device: 'gateway-agent-device', gateway: 'gateway-agent-gateway' };
/** The subject OU that marks a gateway's own certificate. */
export const GATEWAY_OU = 'gateway';
export const THING_NAME_RE = /^[a-zA-Z0-9:_-]{1,128}$/;
/** Separates a gateway's thing name from a sensor id: `<gateway>:<id>`. */
export const SEPARATOR = ':';
/** The thing attribute naming the registered CA a thing belongs to. */
export const CA_ATTRIBUTE = 'caCertificateId';
/** The thing attribute naming the CA a thing belonged to before its last hand-over. */
export const PREVIOUS_CA_ATTRIBUTE = 'previousCaCertificateId';
const PARTITION_RE = /^aws(-[a-z]+)*$/;
const CERT_ID_RE = /^[0-9a-f]{64}$/;
const ACCOUNT_RE = /^\d{12}$/;

let client;
const iot = () => (client ??= new IoTClient({}));
let dataClient;
const iotData = () => (dataClient ??= new IoTDataPlaneClient(process.env.IOT_DATA_ENDPOINT
  ? { endpoint: /^https?:\/\//.test(process.env.IOT_DATA_ENDPOINT) ? process.env.IOT_DATA_ENDPOINT : `https://${process.env.IOT_DATA_ENDPOINT}` }
  : {}));

function log (level, msg, fields) {
  console.log(JSON.stringify({ level, msg, ...fields }));
}

/** The values of attribute `attr` (e.g. 'CN', 'OU') in the subject of a PEM certificate. */
function subjectValues (pem, attr) {
  // one `NAME=value` line per RDN; control characters in values are escaped by Node
  const subject = new X509Certificate(pem).subject;
  return subject.split('\n').filter((l) => l.startsWith(attr + '=')).map((l) => l.slice(attr.length + 1));
}

/** The subject CN of a PEM certificate, or null. */
export function commonNameOf (pem) {
  const cns = subjectValues(pem, 'CN');
  return cns.length === 1 ? cns[0] : null;
}

/** 'gateway' when the certificate's subject has OU=gateway (exactly), else 'device'. */
export function roleOf (pem) {
  return subjectValues(pem, 'OU').includes(GATEWAY_OU) ? 'gateway' : 'device';
}

/**
 * The policy for a certificate of `role`: {role, policyName}. Names come from the
 * environment (POLICY_NAME for devices, GATEWAY_POLICY_NAME for gateways); the two must
 * differ, else a sensor could be given the gateway's wider policy or the reverse.
 */
export function policyFor (role, env = process.env) {
  const names = {
    device: env.POLICY_NAME || DEFAULT_POLICY_NAMES.device,
    gateway: env.GATEWAY_POLICY_NAME || DEFAULT_POLICY_NAMES.gateway
  };
  if (names.device === names.gateway) {
    throw new Error(`POLICY_NAME and GATEWAY_POLICY_NAME are both ${JSON.stringify(names.device)}; they must differ`);
  }
  if (!(role in names)) throw new Error(`unknown certificate role ${role}`);
  return { role, policyName: names[role] };
}

/** The policy document of `role` ('device' or 'gateway') for a partition, region and account. */
export function renderPolicy (partition, region, accountId, role = 'device') {
  const template = POLICY_TEMPLATES[role];
  if (template === undefined) throw new Error(`unknown certificate role ${role}`);
  if (!PARTITION_RE.test(partition ?? '')) throw new Error(`invalid partition ${partition}`);
  const doc = template.replaceAll('{{partition}}', partition).replaceAll('{{region}}', region).replaceAll('{{accountId}}', accountId);
  return JSON.stringify(JSON.parse(doc));
}

/**
 * Why `thingName` may not be enrolled with a certificate of `role`, or null. A gateway's
 * name may not contain the separator; a sensor's may contain it once, between a gateway
 * name and an id that are both non-empty.
 */
export function namingProblem (thingName, role) {
  const parts = thingName.split(SEPARATOR);
  if (role === 'gateway' && parts.length > 1) return `a gateway's thing name may not contain "${SEPARATOR}"`;
  if (parts.length > 2 || parts.some((p) => p === '')) {
    return `a thing name with "${SEPARATOR}" must be <gateway thing>${SEPARATOR}<sensor id>`;
  }
  return null;
}

/** The gateway whose namespace `thingName` is in (`<gateway>:<id>`), or null. */
export function gatewayOf (thingName) {
  const i = thingName.indexOf(SEPARATOR);
  return i > 0 ? thingName.slice(0, i) : null;
}

const isError = (e, name) => e?.name === name;

async function describeThing (thingName) {
  try {
    return await iot().send(new DescribeThingCommand({ thingName }));
  } catch (e) {
    if (isError(e, 'ResourceNotFoundException')) return null;
    throw e;
  }
}

/** Certificate ARNs attached to a thing (every page). */
async function thingPrincipals (thingName) {
  const out = [];
  let nextToken;
  do {
    const r = await iot().send(new ListThingPrincipalsCommand({ thingName, nextToken, maxResults: 100 }));
    out.push(...(r.principals ?? []));
    nextToken = r.nextToken;
  } while (nextToken);
  return out;
}

/**
 * Makes sure thing `thingName` exists and belongs to CA `caId`: creates it bound to that CA,
 * or binds a thing that has no CA yet when every certificate attached to it is from that
 * CA. Returns {owner} (the CA the thing belongs to; !== caId means refused) and `created`.
 */
async function bindThing (thingName, caId) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const thing = await describeThing(thingName);
    if (thing === null) {
      try {
        await iot().send(new CreateThingCommand({ thingName, attributePayload: { attributes: { [CA_ATTRIBUTE]: caId } } }));
        return { owner: caId, created: true };
      } catch (e) {
        if (isError(e, 'ResourceAlreadyExistsException')) continue; // created meanwhile: look again
        throw e;
      }
    }
    const owner = thing.attributes?.[CA_ATTRIBUTE];
    if (owner) return { owner };
    // A thing from before CA binding, or made by an operator: it takes the CA of its
    // certificates when they all come from this one.
    for (const principal of await thingPrincipals(thingName)) {
      const certificateId = /:cert\/([0-9a-f]{64})$/.exec(principal)?.[1];
      if (!certificateId) return { owner: `principal ${principal}` };
      const { certificateDescription: other } = await iot().send(new DescribeCertificateCommand({ certificateId }));
      if (other.caCertificateId !== caId) return { owner: other.caCertificateId };
    }
    try {
      await iot().send(new UpdateThingCommand({
        thingName, expectedVersion: thing.version, attributePayload: { attributes: { [CA_ATTRIBUTE]: caId }, merge: true }
      }));
      log('info', 'thing bound to the CA of its certificates', { thingName, caCertificateId: caId });
      return { owner: caId };
    } catch (e) {
      if (isError(e, 'VersionConflictException')) continue; // changed meanwhile: look again
      throw e;
    }
  }
  throw new Error(`thing ${thingName} kept changing while being bound to CA ${caId}`);
}

async function ignoreExisting (promise) {
  try {
    return await promise;
  } catch (e) {
    if (e instanceof ResourceAlreadyExistsException || e?.name === 'ResourceAlreadyExistsException') return null;
    throw e;
  }
}

export async function handler (event, context) {
  const kind = requestKind(event);
  if (kind === 'handover' || kind === 'invalid-handover') return handleHandover(event, kind === 'invalid-handover');
  if (kind === 'retire') return handleRetire(event);
  const certificateId = event?.certificateId;
  if (!CERT_ID_RE.test(certificateId ?? '')) throw new Error('event.certificateId is missing or not a certificate id');
  if (event.certificateStatus !== 'PENDING_ACTIVATION') {
    log('info', 'ignored: not a PENDING_ACTIVATION event', { certificateId, certificateStatus: event.certificateStatus });
    return { certificateId, skipped: 'not PENDING_ACTIVATION' };
  }
  const region = process.env.AWS_REGION;
  if (!region) throw new Error('AWS_REGION is not set');
  const functionArn = (context?.invokedFunctionArn ?? '').split(':');
  const partition = functionArn[0] === 'arn' ? functionArn[1] : undefined;
  if (!PARTITION_RE.test(partition ?? '')) throw new Error('cannot determine the AWS partition from context.invokedFunctionArn');
  const accountId = ACCOUNT_RE.test(event.awsAccountId ?? '') ? event.awsAccountId : functionArn[4];
  if (!ACCOUNT_RE.test(accountId ?? '')) throw new Error('cannot determine the AWS account id');
  policyFor('device'); // configuration errors fail before any change

  const { certificateDescription: cert } = await iot().send(new DescribeCertificateCommand({ certificateId }));
  if (event.caCertificateId && cert.caCertificateId !== event.caCertificateId) {
    throw new Error(`certificate ${certificateId} was issued by CA ${cert.caCertificateId}, not ${event.caCertificateId}`);
  }
  if (cert.status !== 'PENDING_ACTIVATION' && cert.status !== 'ACTIVE') {
    log('warn', 'certificate left alone', { certificateId, status: cert.status });
    return { certificateId, skipped: `status ${cert.status}` };
  }
  const thingName = commonNameOf(cert.certificatePem);
  if (thingName === null || !THING_NAME_RE.test(thingName)) {
    // Not activated: a certificate whose CN cannot be a thing name stays PENDING_ACTIVATION.
    throw new Error(`certificate ${certificateId}: subject CN ${JSON.stringify(thingName)} is not a valid thing name`);
  }
  const principal = cert.certificateArn;
  const { role, policyName } = policyFor(roleOf(cert.certificatePem));
  const naming = namingProblem(thingName, role);
  if (naming) throw new Error(`certificate ${certificateId}: thing name ${thingName}: ${naming}`);

  // The thing, and for `<gateway>:<id>` the gateway's namespace, must belong to this CA.
  const caId = cert.caCertificateId;
  const gateway = gatewayOf(thingName);
  let thingCreated = false;
  for (const [name, what] of gateway ? [[gateway, 'gateway namespace'], [thingName, 'thing']] : [[thingName, 'thing']]) {
    const { owner, created } = await bindThing(name, caId);
    if (name === thingName) thingCreated = Boolean(created);
    if (owner !== caId) {
      log('warn', `refused: the ${what} belongs to another CA`, {
        certificateId, thingName, [what === 'thing' ? 'thing' : 'gateway']: name,
        certificateCaId: caId, thingCaId: owner, status: cert.status
      });
      return { certificateId, thingName, refused: `${what} ${name} belongs to CA ${owner}, the certificate is from CA ${caId}` };
    }
  }

  // A renewal: the thing already existed with other certificates attached (the device
  // retires the old one once it is connected with this one).
  const others = thingCreated ? [] : (await thingPrincipals(thingName)).filter((p) => p !== principal);
  const renewal = others.length > 0;
  // A certificate of the thing that an operator made INACTIVE or REVOKED (a retired one is
  // also detached) stops the thing's renewals: its device does not get itself a new
  // certificate behind the operator's back. The new one stays PENDING_ACTIVATION; once the
  // operator has detached the blocked certificate (or made it ACTIVE again), the device's
  // next connect brings the event again.
  for (const other of others) {
    const otherId = other.slice(other.lastIndexOf('/') + 1);
    if (!CERT_ID_RE.test(otherId)) continue;
    const { certificateDescription: d } = await iot().send(new DescribeCertificateCommand({ certificateId: otherId }));
    if (d.status === 'INACTIVE' || d.status === 'REVOKED') {
      const refused = `certificate ${otherId} of thing ${thingName} is ${d.status}: a new certificate is not ` +
        'activated while it is attached (detach it, or make it ACTIVE again, to let the thing renew)';
      log('warn', 'refused: the thing has a certificate an operator deactivated', {
        certificateId, thingName, blockedBy: otherId, blockedStatus: d.status
      });
      return { certificateId, thingName, refused };
    }
  }

  await ignoreExisting(iot().send(new CreatePolicyCommand({ policyName, policyDocument: renderPolicy(partition, region, accountId, role) })));
  await iot().send(new AttachPolicyCommand({ policyName, target: principal }));
  await iot().send(new AttachThingPrincipalCommand({ thingName, principal }));
  let activated = false;
  if (cert.status !== 'ACTIVE') {
    await iot().send(new UpdateCertificateCommand({ certificateId, newStatus: 'ACTIVE' }));
    activated = true;
  }
  const out = { certificateId, thingName, role, policyName, activated, ...(renewal ? { renewal: true } : {}) };
  log('info', 'certificate provisioned', out);
  return out;
}

// ---- retirement ----------------------------------------------------------------------

/** The topic prefix of a thing's retire request and replies. */
export const retireTopic = (thingName) => `lifecycle/${thingName}/retire`;

/**
 * What an event is: 'handover', 'invalid-handover', 'retire' or 'registration'. Each device
 * rule's SELECT sets its keys after the payload's own (`*` first), so a device can add keys
 * but cannot change those: the hand-over rule sets `request` = 'handover', `thingName` and `certificateId`
 * (principal()); the retire rule sets `request` = 'retire', `thingName` and
 * `newCertificateId` (principal()). Registration events (published by AWS IoT on
 * $aws/events/..., which devices cannot publish to) have neither `request` nor `thingName`.
 * So:
 *  - `request` 'handover' is the hand-over rule, unless the event also has
 *    `newCertificateId`: a retire rule deployed before `request` existed sets that, and its
 *    `request` comes from the payload. Such an event is 'invalid-handover' (refused, nothing
 *    done): it is not a hand-over request (its certificateId would be the payload's), and
 *    taking it as a retire request would trust a hand-over payload's newCertificateId.
 *  - else `thingName` is a retire request, from the retire rule of now or of before (whose
 *    newCertificateId, clientId and thingName the payload cannot change either);
 *  - else a registration event.
 * Whatever a device puts in its payload, its request never takes another path.
 */
export function requestKind (event) {
  if (event === null || typeof event !== 'object') return 'registration';
  if (event.request === 'handover') return Object.hasOwn(event, 'newCertificateId') ? 'invalid-handover' : 'handover';
  if (Object.hasOwn(event, 'thingName')) return 'retire';
  return 'registration';
}

/** True when the event is a retire request (requestKind). */
export function isRetireRequest (event) {
  return requestKind(event) === 'retire';
}

/** A refusal of a request: answered on .../rejected with `reason`. */
class Refusal extends Error {}

async function publishReply (thingName, outcome, body, action) {
  const topic = `lifecycle/${thingName}/${action}/${outcome}`;
  await iotData().send(new PublishCommand({ topic, qos: 1, payload: Buffer.from(JSON.stringify(body)) }));
  return topic;
}

async function describeCertificate (certificateId) {
  try {
    return (await iot().send(new DescribeCertificateCommand({ certificateId }))).certificateDescription;
  } catch (e) {
    if (isError(e, 'ResourceNotFoundException')) return null;
    throw e;
  }
}

/**
 * Retire `old`, the thing's certificate before `new`: the checks, then INACTIVE and detach.
 * Returns the reply body of an acceptance; throws Refusal for a request that is refused.
 */
async function retire ({ thingName, clientId, oldId, newId }) {
  if (!CERT_ID_RE.test(oldId ?? '')) throw new Refusal('oldCertificateId must be a certificate id (64 lowercase hex characters)');
  if (!CERT_ID_RE.test(newId ?? '')) throw new Refusal('the request was not published with an X.509 certificate');
  if (clientId !== thingName) throw new Refusal(`the client id ${JSON.stringify(clientId ?? null)} is not the thing name ${thingName}`);
  if (oldId === newId) throw new Refusal('oldCertificateId is the certificate this request was published with');

  const thing = await describeThing(thingName);
  if (thing === null) throw new Refusal(`thing ${thingName} does not exist`);
  const principals = await thingPrincipals(thingName);
  const newCert = await describeCertificate(newId);
  if (newCert === null || !principals.includes(newCert.certificateArn)) {
    throw new Refusal(`the certificate the request was published with is not attached to thing ${thingName}`);
  }
  if (newCert.status !== 'ACTIVE') throw new Refusal(`the certificate the request was published with is ${newCert.status}, not ACTIVE`);

  const oldCert = await describeCertificate(oldId);
  if (oldCert === null) throw new Refusal(`certificate ${oldId} does not exist`);
  // The requester is from the thing's CA; the old certificate from that CA too, or, after a
  // hand-over, from the CA the thing belonged to before (a thing without the attribute: both
  // from the same CA).
  const thingCa = thing.attributes?.[CA_ATTRIBUTE];
  const previousCa = thing.attributes?.[PREVIOUS_CA_ATTRIBUTE];
  if (thingCa && newCert.caCertificateId !== thingCa) {
    throw new Refusal(`the certificate the request was published with was issued by CA ${newCert.caCertificateId}, not by the CA of thing ${thingName} (${thingCa})`);
  }
  if (thingCa
    ? oldCert.caCertificateId !== thingCa && !(previousCa && oldCert.caCertificateId === previousCa)
    : oldCert.caCertificateId !== newCert.caCertificateId) {
    const allowed = thingCa ? (previousCa ? `${thingCa}, or ${previousCa} before its hand-over` : thingCa) : newCert.caCertificateId;
    throw new Refusal(`certificate ${oldId} was issued by CA ${oldCert.caCertificateId}, not by the CA of thing ${thingName} (${allowed})`);
  }
  const attached = principals.includes(oldCert.certificateArn);
  if (!attached) {
    // Retired already (a repeated request): the same answer again. Anything else is not
    // this thing's certificate to retire.
    if (oldCert.status === 'INACTIVE' || oldCert.status === 'REVOKED') {
      return { oldCertificateId: oldId, status: oldCert.status, detached: true, repeated: true };
    }
    throw new Refusal(`certificate ${oldId} is not attached to thing ${thingName}`);
  }
  // The request must come over the newer certificate: one connected with the old
  // certificate cannot retire the certificate that replaces it.
  if (!(oldCert.creationDate < newCert.creationDate)) {
    throw new Refusal(`certificate ${oldId} was registered after the certificate the request was published with; only an older certificate can be retired`);
  }
  let status = oldCert.status;
  if (status !== 'INACTIVE' && status !== 'REVOKED') {
    await iot().send(new UpdateCertificateCommand({ certificateId: oldId, newStatus: 'INACTIVE' }));
    status = 'INACTIVE';
  }
  await iot().send(new DetachThingPrincipalCommand({ thingName, principal: oldCert.certificateArn }));
  return { oldCertificateId: oldId, status, detached: true };
}

/**
 * Answer a lifecycle request `event` on lifecycle/<thing>/<action>/accepted|rejected: a
 * valid thing name first (none: no topic to answer on), then `run(thingName)`, which returns
 * the reply body of an acceptance (with `repeated` for a request already done) or throws
 * Refusal. The reply echoes the request's `echoField`; any other error is answered "try
 * again later" and rethrown. `what` names the request in the log ('retire request'),
 * `failure` what the cloud could not do; `accepted` says what an acceptance returns
 * (`flag`: true, and the reply's `detail`) and logs (`repeatedLog` or `doneLog`).
 */
async function answerLifecycleRequest ({ event, action, what, echoField, certificateField, failure, run, accepted }) {
  const thingName = event.thingName;
  const fields = { thingName, clientId: event.clientId, [echoField]: event[echoField], [certificateField]: event[certificateField] };
  if (typeof thingName !== 'string' || !THING_NAME_RE.test(thingName)) {
    // no topic to answer on: the rule's topic(2) is always a thing name for our topics
    log('warn', `${what} refused: no valid thing name`, fields);
    return { ...fields, refused: 'no valid thing name' };
  }
  const echo = typeof event[echoField] === 'string' ? event[echoField] : null;
  let result;
  try {
    result = await run(thingName);
  } catch (e) {
    if (!(e instanceof Refusal)) {
      // Not a refusal (e.g. a call the role does not allow): say so to the device, then fail
      // the invocation so the error is seen.
      log('error', `${what} failed`, { ...fields, error: `${e?.name}: ${e?.message}` });
      try {
        await publishReply(thingName, 'rejected', { [echoField]: echo, reason: `the cloud could not ${failure} (${e?.name ?? 'error'}); try again later` }, action);
      } catch (e2) {
        log('error', 'could not publish the rejection', { ...fields, error: `${e2?.name}: ${e2?.message}` });
      }
      throw e;
    }
    log('warn', `${what} refused`, { ...fields, reason: e.message });
    await publishReply(thingName, 'rejected', { [echoField]: echo, reason: e.message }, action);
    return { ...fields, refused: e.message };
  }
  const { repeated, ...reply } = result;
  const { flag, detail } = accepted;
  await publishReply(thingName, 'accepted', reply, action);
  log('info', repeated ? accepted.repeatedLog : accepted.doneLog, { ...fields, [detail]: reply[detail] });
  return { ...fields, [flag]: true, [detail]: reply[detail], ...(repeated ? { repeated: true } : {}) };
}

function handleRetire (event) {
  return answerLifecycleRequest({
    event,
    action: 'retire',
    what: 'retire request',
    echoField: 'oldCertificateId',
    certificateField: 'newCertificateId',
    failure: 'retire the certificate',
    run: (thingName) => retire({ thingName, clientId: event.clientId, oldId: event.oldCertificateId, newId: event.newCertificateId }),
    accepted: { flag: 'retired', detail: 'status', repeatedLog: 'retire request repeated: already retired', doneLog: 'certificate retired' }
  });
}

// ---- CA hand-over --------------------------------------------------------------------

/** The topic prefix of a thing's hand-over request and replies. */
export const handoverTopic = (thingName) => `lifecycle/${thingName}/handover`;

/**
 * DescribeCACertificate (IoT API reference,
 * https://docs.aws.amazon.com/iot/latest/apireference/API_DescribeCACertificate.html):
 * certificateDescription {certificateId, status ACTIVE|INACTIVE, autoRegistrationStatus, ...}
 * of a CA certificate registered in this account, or null when there is none with that id.
 */
async function describeCaCertificate (caCertificateId) {
  try {
    return (await iot().send(new DescribeCACertificateCommand({ certificateId: caCertificateId }))).certificateDescription;
  } catch (e) {
    if (isError(e, 'ResourceNotFoundException')) return null;
    throw e;
  }
}

/**
 * Hand thing `thingName` over to CA `caId`, asked over certificate `certificateId`: the
 * checks, then UpdateThing. `ambiguous`: an 'invalid-handover' event (requestKind). Returns the reply body of an acceptance (with `repeated` when the
 * thing already belonged to that CA); throws Refusal for a request that is refused.
 */
async function handOver ({ thingName, clientId, certificateId, caId, ambiguous }) {
  if (ambiguous) throw new Refusal('a hand-over request may not carry newCertificateId');
  if (!CERT_ID_RE.test(caId ?? '')) throw new Refusal('caCertificateId must be a CA certificate id (64 lowercase hex characters)');
  if (!CERT_ID_RE.test(certificateId ?? '')) throw new Refusal('the request was not published with an X.509 certificate');
  if (clientId !== thingName) throw new Refusal(`the client id ${JSON.stringify(clientId ?? null)} is not the thing name ${thingName}`);

  let thing = await describeThing(thingName);
  if (thing === null) throw new Refusal(`thing ${thingName} does not exist`);
  const cert = await describeCertificate(certificateId);
  if (cert === null || !(await thingPrincipals(thingName)).includes(cert.certificateArn)) {
    throw new Refusal(`the certificate the request was published with is not attached to thing ${thingName}`);
  }
  if (cert.status !== 'ACTIVE') throw new Refusal(`the certificate the request was published with is ${cert.status}, not ACTIVE`);
  if (!CERT_ID_RE.test(cert.caCertificateId ?? '')) throw new Refusal('the certificate the request was published with was not issued by a registered CA');

  const ca = await describeCaCertificate(caId);
  if (ca === null) throw new Refusal(`CA certificate ${caId} is not registered in this account`);
  if (ca.status !== 'ACTIVE') throw new Refusal(`CA certificate ${caId} is ${ca.status}, not ACTIVE`);

  const gateway = gatewayOf(thingName);
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt > 0) {
      thing = await describeThing(thingName);
      if (thing === null) throw new Refusal(`thing ${thingName} does not exist`);
    }
    const current = thing.attributes?.[CA_ATTRIBUTE] || cert.caCertificateId;
    const previous = thing.attributes?.[PREVIOUS_CA_ATTRIBUTE] || null;
    const repeated = current === caId;
    // Only a certificate of the thing's CA can hand it over; a repeated request (the thing is
    // the requested CA's already) may also come over the previous CA's certificate, which
    // asked the first time and is still in use until the new one is enrolled.
    if (cert.caCertificateId !== current && !(repeated && previous && cert.caCertificateId === previous)) {
      throw new Refusal(`the certificate the request was published with was issued by CA ${cert.caCertificateId}, not by the CA of thing ${thingName} (${current})`);
    }
    // A sensor's namespace `<gateway>:` belongs to the CA of thing `<gateway>`: the sensor
    // follows its gateway, never goes first.
    if (gateway) {
      const owner = (await describeThing(gateway))?.attributes?.[CA_ATTRIBUTE];
      if (owner !== caId) {
        throw new Refusal(`gateway thing ${gateway} belongs to ${owner ? `CA ${owner}` : 'no CA'}, not to CA ${caId}: hand the gateway over first`);
      }
    }
    if (repeated) return { caCertificateId: caId, previousCaCertificateId: previous, repeated: true };
    try {
      await iot().send(new UpdateThingCommand({
        thingName,
        expectedVersion: thing.version,
        attributePayload: { attributes: { [CA_ATTRIBUTE]: caId, [PREVIOUS_CA_ATTRIBUTE]: current }, merge: true }
      }));
      return { caCertificateId: caId, previousCaCertificateId: current };
    } catch (e) {
      if (isError(e, 'VersionConflictException')) continue; // changed meanwhile: look again
      throw e;
    }
  }
  throw new Error(`thing ${thingName} kept changing while being handed over to CA ${caId}`);
}

function handleHandover (event, ambiguous = false) {
  return answerLifecycleRequest({
    event,
    action: 'handover',
    what: 'hand-over request',
    echoField: 'caCertificateId',
    certificateField: 'certificateId',
    failure: 'hand the thing over',
    run: (thingName) => handOver({ thingName, clientId: event.clientId, certificateId: event.certificateId, caId: event.caCertificateId, ambiguous }),
    accepted: {
      flag: 'handedOver',
      detail: 'previousCaCertificateId',
      repeatedLog: 'hand-over request repeated: the thing already belongs to that CA',
      doneLog: 'thing handed over to a new CA'
    }
  });
}
