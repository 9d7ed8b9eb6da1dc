// JITR Lambda for gateway-agent devices.
//
// Trigger: the topic rule
//   SELECT * FROM '$aws/events/certificates/registered/#' WHERE certificateStatus = "PENDING_ACTIVATION"
// whose event is {certificateId, caCertificateId, timestamp, certificateStatus, awsAccountId,
// certificateRegistrationTimestamp}.
//
// For the certificate in the event it: describes the certificate, takes the thing name from
// the subject CN (validated against AWS's thing-name rule), creates the thing, creates or
// reuses the device policy (device-policy.json, with region and account filled in), attaches
// the policy to the certificate, attaches the certificate to the thing, and activates the
// certificate LAST, so that by the time the device can authenticate it is also authorized.
// Every step is idempotent, so a repeated event (AWS republishes it on each connect while
// the certificate is pending) converges to the same state. A certificate an operator made
// INACTIVE or REVOKED is left alone.
//
// Configuration (environment): AWS_REGION (set by Lambda), POLICY_NAME (default
// gateway-agent-device). The account comes from the event (awsAccountId), falling back to
// the function's own ARN. The IoT client takes endpoint and credentials from the standard
// SDK environment; iot-sim points it at itself through AWS_ENDPOINT_URL_IOT.

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

const POLICY_TEMPLATE = readFileSync(new URL('./device-policy.json', import.meta.url), 'utf8');
export const THING_NAME_RE = /^[a-zA-Z0-9:_-]{1,128}$/;
const CERT_ID_RE = /^[0-9a-f]{64}$/;
const ACCOUNT_RE = /^\d{12}$/;

let client;
const iot = () => (client ??= new IoTClient({}));

function log (level, msg, fields) {
  console.log(JSON.stringify({ level, msg, ...fields }));
}

/** The subject CN of a PEM certificate, or null. */
export function commonNameOf (pem) {
  const subject = new X509Certificate(pem).subject;
  const cns = subject.split('\n').filter((l) => l.startsWith('CN=')).map((l) => l.slice(3));
  return cns.length === 1 ? cns[0] : null;
}

/** The device policy document for `region` and `accountId`. */
export function renderPolicy (region, accountId) {
  const doc = POLICY_TEMPLATE.replaceAll('{{region}}', region).replaceAll('{{accountId}}', accountId);
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
  const accountId = ACCOUNT_RE.test(event.awsAccountId ?? '')
    ? event.awsAccountId
    : (context?.invokedFunctionArn ?? '').split(':')[4];
  if (!ACCOUNT_RE.test(accountId ?? '')) throw new Error('cannot determine the AWS account id');
  const policyName = process.env.POLICY_NAME || 'gateway-agent-device';

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

  await ignoreExisting(iot().send(new CreateThingCommand({ thingName })));
  await ignoreExisting(iot().send(new CreatePolicyCommand({ policyName, policyDocument: renderPolicy(region, accountId) })));
  await iot().send(new AttachPolicyCommand({ policyName, target: principal }));
  await iot().send(new AttachThingPrincipalCommand({ thingName, principal }));
  let activated = false;
  if (cert.status !== 'ACTIVE') {
    await iot().send(new UpdateCertificateCommand({ certificateId, newStatus: 'ACTIVE' }));
    activated = true;
  }
  log('info', 'certificate provisioned', { certificateId, thingName, policyName, activated });
  return { certificateId, thingName, policyName, activated };
}
