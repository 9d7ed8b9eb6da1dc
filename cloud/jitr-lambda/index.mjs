// JITR Lambda for gateway-agent devices.
//
// Trigger: the topic rule
//   SELECT * FROM '$aws/events/certificates/registered/#' WHERE certificateStatus = "PENDING_ACTIVATION"
// whose event is {certificateId, caCertificateId, timestamp, certificateStatus, awsAccountId,
// certificateRegistrationTimestamp}.
//
// For the certificate in the event it: describes the certificate, takes the thing name from
// the subject CN (validated against AWS's thing-name rule), creates the thing, creates or
// reuses the policy for the certificate's role (with partition, region and account filled in), attaches
// the policy to the certificate, attaches the certificate to the thing, and activates the
// certificate LAST, so that by the time the device can authenticate it is also authorized.
// The role comes from the subject: `OU=gateway` (a gateway's own certificate) gets the
// gateway policy (gateway-policy.json: its own topics plus those of its shared-mode sensors,
// `<gateway thing>-<sensor id>`); any other certificate (a sensor) gets the device policy
// (device-policy.json: its own topics only).
// Every step is idempotent, so a repeated event (AWS republishes it on each connect while
// the certificate is pending) converges to the same state. A certificate an operator made
// INACTIVE or REVOKED is left alone.
//
// Configuration (environment): AWS_REGION (set by Lambda), POLICY_NAME (default
// gateway-agent-device), GATEWAY_POLICY_NAME (default gateway-agent-gateway). The partition
// (aws, aws-cn, aws-us-gov) comes from the function's own ARN (context.invokedFunctionArn);
// the account from the event (awsAccountId), falling back to the function's own ARN. The IoT
// client takes endpoint and credentials from the standard SDK environment; iot-sim points it
// at itself through AWS_ENDPOINT_URL_IOT.

import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import {
  IoTClient,
  DescribeCertificateCommand,
  CreateThingCommand,
  CreatePolicyCommand,
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  UpdateCertificateCommand,
  ResourceAlreadyExistsException
} from '@aws-sdk/client-iot';

const POLICY_TEMPLATES = {
  device: readFileSync(new URL('./device-policy.json', import.meta.url), 'utf8'),
  gateway: readFileSync(new URL('./gateway-policy.json', import.meta.url), 'utf8')
};
export const DEFAULT_POLICY_NAMES = { device: 'gateway-agent-device', gateway: 'gateway-agent-gateway' };
/** The subject OU that marks a gateway's own certificate. */
export const GATEWAY_OU = 'gateway';
export const THING_NAME_RE = /^[a-zA-Z0-9:_-]{1,128}$/;
const PARTITION_RE = /^aws(-[a-z]+)*$/;
const CERT_ID_RE = /^[0-9a-f]{64}$/;
const ACCOUNT_RE = /^\d{12}$/;

let client;
const iot = () => (client ??= new IoTClient({}));

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

async function ignoreExisting (promise) {
  try {
    return await promise;
  } catch (e) {
    if (e instanceof ResourceAlreadyExistsException || e?.name === 'ResourceAlreadyExistsException') return null;
    throw e;
  }
}

export async function handler (event, context) {
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

  await ignoreExisting(iot().send(new CreateThingCommand({ thingName })));
  await ignoreExisting(iot().send(new CreatePolicyCommand({ policyName, policyDocument: renderPolicy(partition, region, accountId, role) })));
  await iot().send(new AttachPolicyCommand({ policyName, target: principal }));
  await iot().send(new AttachThingPrincipalCommand({ thingName, principal }));
  let activated = false;
  if (cert.status !== 'ACTIVE') {
    await iot().send(new UpdateCertificateCommand({ certificateId, newStatus: 'ACTIVE' }));
    activated = true;
  }
  log('info', 'certificate provisioned', { certificateId, thingName, role, policyName, activated });
  return { certificateId, thingName, role, policyName, activated };
}
