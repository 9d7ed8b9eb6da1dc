// The sim's AWS IoT registry: CA certificates, device certificates, policies, things,
// their attachments and topic rules. It is the single source of truth for the control
// API, the broker's admission decisions and policy evaluation.
//
// Persistence: the whole registry is one JSON file, DIR/registry.json, replaced atomically
// (write temp file, fsync, rename). Writes are coalesced: a mutation schedules a write
// within `flushDelayMs` (default 20 ms) and close() flushes synchronously, so a clean
// exit (SIGTERM/SIGINT) never loses a change and a JITR storm does not rewrite the file
// once per certificate. Only a SIGKILL inside that window can lose the latest changes.
//
// Mutations that matter to live connections are announced as events:
//   'certificateStatus' ({certificateId, from, to})  - the broker disconnects on leaving ACTIVE
//   'authzChanged' ()                                 - policy/attachment change: drop caches

import { EventEmitter } from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AwsError, notFound, invalid } from './errors.js';
import { parsePolicy } from './policy.js';
import { certificateId, parseCertificate, directlyIssued, commonName } from './pki.js';

/** The AWS partition of a region: aws-cn for cn-*, aws-us-gov for us-gov-*, else aws. */
export function partitionOf (region) {
  if (/^cn-/.test(region)) return 'aws-cn';
  if (/^us-gov-/.test(region)) return 'aws-us-gov';
  return 'aws';
}

const THING_NAME_RE = /^[a-zA-Z0-9:_-]{1,128}$/;
const POLICY_NAME_RE = /^[\w+=,.@-]{1,128}$/;
const CERT_ID_RE = /^[0-9a-f]{64}$/;
const ATTR_NAME_RE = /^[a-zA-Z0-9_.,@/:#-]{1,128}$/;
const ATTR_VALUE_RE = /^[a-zA-Z0-9_.,@/:#=[\]-]{0,800}$/;

/** Thing attributes as the IoT API accepts them (without a thing type: at most 3). */
function checkAttributes (attributes) {
  if (!attributes || typeof attributes !== 'object' || Array.isArray(attributes)) throw invalid('attributes must be a map');
  const entries = Object.entries(attributes);
  if (entries.length > 3) throw invalid('A thing without a thing type can have at most 3 attributes');
  for (const [k, v] of entries) {
    if (!ATTR_NAME_RE.test(k)) throw invalid(`Invalid attribute name: ${k}`);
    if (typeof v !== 'string' || !ATTR_VALUE_RE.test(v)) throw invalid(`Invalid value of attribute ${k}`);
  }
  return { ...attributes };
}

const CERT_STATUSES = ['ACTIVE', 'INACTIVE', 'REVOKED', 'PENDING_TRANSFER', 'REGISTER_INACTIVE', 'PENDING_ACTIVATION'];

export class Registry extends EventEmitter {
  constructor ({ dataDir, accountId, region, flushDelayMs = 20 }) {
    super();
    this.file = path.join(dataDir, 'registry.json');
    this.region = region;
    this.partition = partitionOf(region);
    this.flushDelayMs = flushDelayMs;
    this.x509Cache = new Map(); // certificate id -> X509Certificate (not persisted)
    this.compiledPolicies = new Map(); // policy name -> compiled statements
    let state = null;
    try { state = JSON.parse(fs.readFileSync(this.file, 'utf8')); } catch (e) {
      if (e.code !== 'ENOENT') throw new Error(`cannot read ${this.file}: ${e.message}`);
    }
    this.s = state || {
      accountId,
      registrationCode: randomBytes(32).toString('hex'),
      cas: {}, certificates: {}, policies: {}, principalPolicies: {}, things: {}, thingPrincipals: {}, rules: {}
    };
    this.accountId = this.s.accountId;
    this.timer = null;
    if (!state) this.flush();
  }

  // ---- persistence ------------------------------------------------------------------

  changed () {
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), this.flushDelayMs);
  }

  flush () {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const tmp = this.file + '.tmp';
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeSync(fd, JSON.stringify(this.s));
      fs.fsyncSync(fd);
    } finally { fs.closeSync(fd); }
    fs.renameSync(tmp, this.file);
  }

  close () { if (this.timer) this.flush(); }

  // ---- ARNs ---------------------------------------------------------------------------

  arn (kind, name) { return `arn:${this.partition}:iot:${this.region}:${this.accountId}:${kind}/${name}`; }
  certArn (id) { return this.arn('cert', id); }

  /** Certificate id from a certificate ARN; throws InvalidRequestException if malformed. */
  certIdFromArn (principal) {
    const m = /^arn:aws[\w-]*:iot:[\w-]*:\d*:cert\/([0-9a-f]{64})$/.exec(principal || '');
    if (!m) throw invalid(`Invalid principal: ${principal}`);
    return m[1];
  }

  // ---- CA certificates ----------------------------------------------------------------

  registrationCode () { return this.s.registrationCode; }

  registerCa ({ caCertificate, verificationCertificate, setAsActive, allowAutoRegistration, certificateMode }) {
    const mode = certificateMode || 'DEFAULT';
    if (mode !== 'DEFAULT' && mode !== 'SNI_ONLY') throw invalid(`Invalid certificateMode: ${mode}`);
    const ca = parseCertificate(caCertificate);
    if (!ca) throw new AwsError('CertificateValidationException', 'CA certificate is not a valid PEM certificate');
    if (!ca.ca) throw new AwsError('CertificateValidationException', 'Certificate is not a CA certificate (basicConstraints CA:TRUE missing)');
    if (mode === 'DEFAULT') {
      if (!verificationCertificate) throw invalid('A verification certificate is required in DEFAULT certificate mode');
      const v = parseCertificate(verificationCertificate);
      if (!v) throw new AwsError('CertificateValidationException', 'Verification certificate is not a valid PEM certificate');
      if (commonName(v) !== this.s.registrationCode) {
        throw new AwsError('RegistrationCodeValidationException', 'The verification certificate does not contain the registration code in its common name');
      }
      if (!directlyIssued(v, ca)) {
        throw new AwsError('CertificateValidationException', 'The verification certificate is not signed by the CA certificate');
      }
    }
    const id = certificateId(ca);
    if (this.s.cas[id]) {
      throw new AwsError('ResourceAlreadyExistsException', 'The certificate is already registered', { resourceId: id, resourceArn: this.arn('cacert', id) });
    }
    const now = Date.now();
    this.s.cas[id] = {
      certificateId: id,
      pem: ca.toString(),
      status: setAsActive ? 'ACTIVE' : 'INACTIVE',
      autoRegistrationStatus: allowAutoRegistration ? 'ENABLE' : 'DISABLE',
      certificateMode: mode,
      creationDate: now,
      lastModifiedDate: now,
      generationId: randomUUID(),
      customerVersion: 1,
      validity: { notBefore: Date.parse(ca.validFrom), notAfter: Date.parse(ca.validTo) }
    };
    this.x509Cache.set(id, ca);
    this.changed();
    return { certificateId: id, certificateArn: this.arn('cacert', id) };
  }

  ca (id) {
    const c = this.s.cas[id];
    if (!c) throw notFound(`CA certificate ${id} does not exist`);
    return c;
  }

  /**
   * DescribeCACertificate (IoT API reference,
   * https://docs.aws.amazon.com/iot/latest/apireference/API_DescribeCACertificate.html):
   * {certificateDescription: {certificateArn, certificateId, status ACTIVE|INACTIVE,
   * autoRegistrationStatus ENABLE|DISABLE, certificateMode, ...}, registrationConfig}; an id
   * that is not registered is ResourceNotFoundException.
   */
  describeCa (id) {
    const c = this.ca(id);
    return {
      certificateDescription: {
        certificateArn: this.arn('cacert', id), certificateId: id, status: c.status,
        certificatePem: c.pem, ownedBy: this.accountId, creationDate: c.creationDate / 1000,
        autoRegistrationStatus: c.autoRegistrationStatus, lastModifiedDate: c.lastModifiedDate / 1000,
        customerVersion: c.customerVersion, generationId: c.generationId,
        validity: { notBefore: c.validity.notBefore / 1000, notAfter: c.validity.notAfter / 1000 },
        certificateMode: c.certificateMode
      },
      registrationConfig: {}
    };
  }

  updateCa (id, { newStatus, newAutoRegistrationStatus }) {
    const c = this.ca(id);
    if (newStatus !== undefined && newStatus !== 'ACTIVE' && newStatus !== 'INACTIVE') throw invalid(`Invalid newStatus: ${newStatus}`);
    if (newAutoRegistrationStatus !== undefined && newAutoRegistrationStatus !== 'ENABLE' && newAutoRegistrationStatus !== 'DISABLE') {
      throw invalid(`Invalid newAutoRegistrationStatus: ${newAutoRegistrationStatus}`);
    }
    if (newStatus) c.status = newStatus;
    if (newAutoRegistrationStatus) c.autoRegistrationStatus = newAutoRegistrationStatus;
    c.lastModifiedDate = Date.now();
    c.customerVersion++;
    this.changed();
  }

  listCas () {
    return Object.values(this.s.cas).sort((a, b) => a.creationDate - b.creationDate).map((c) => ({
      certificateArn: this.arn('cacert', c.certificateId), certificateId: c.certificateId,
      status: c.status, creationDate: c.creationDate / 1000
    }));
  }

  /** DeleteCACertificate: only an INACTIVE CA; certificates it issued stay registered. */
  deleteCa (id) {
    const c = this.ca(id);
    if (c.status === 'ACTIVE') throw new AwsError('CertificateStateException', 'The CA certificate must be INACTIVE before it can be deleted');
    delete this.s.cas[id];
    this.x509Cache.delete(id);
    this.changed();
  }

  caX509 (id) {
    let x = this.x509Cache.get(id);
    if (!x) { x = parseCertificate(this.s.cas[id].pem); this.x509Cache.set(id, x); }
    return x;
  }

  /** The registered CA that directly issued `cert` (signature verified), or null. */
  findIssuingCa (cert) {
    for (const id of Object.keys(this.s.cas)) {
      if (directlyIssued(cert, this.caX509(id))) return this.s.cas[id];
    }
    return null;
  }

  // ---- device certificates ------------------------------------------------------------

  cert (id) {
    const c = this.s.certificates[id];
    if (!c) throw notFound(`The certificate ${id} does not exist`);
    return c;
  }

  findCert (id) { return this.s.certificates[id] || null; }

  /** JITR: register `x509` issued by CA `caId` as PENDING_ACTIVATION. */
  registerPending (x509, caId) {
    const id = certificateId(x509);
    const now = Date.now();
    this.s.certificates[id] = {
      certificateId: id, caCertificateId: caId, pem: x509.toString(), status: 'PENDING_ACTIVATION',
      certificateMode: this.s.cas[caId].certificateMode, creationDate: now, lastModifiedDate: now,
      generationId: randomUUID(), customerVersion: 1,
      validity: { notBefore: Date.parse(x509.validFrom), notAfter: Date.parse(x509.validTo) }
    };
    this.changed();
    return this.s.certificates[id];
  }

  describeCert (id) {
    const c = this.cert(id);
    return {
      certificateDescription: {
        certificateArn: this.certArn(id), certificateId: id, caCertificateId: c.caCertificateId,
        status: c.status, certificatePem: c.pem, ownedBy: this.accountId,
        creationDate: c.creationDate / 1000, lastModifiedDate: c.lastModifiedDate / 1000,
        customerVersion: c.customerVersion, generationId: c.generationId,
        transferData: {},
        validity: { notBefore: c.validity.notBefore / 1000, notAfter: c.validity.notAfter / 1000 },
        certificateMode: c.certificateMode
      }
    };
  }

  listCerts (caId) {
    if (caId !== undefined && !CERT_ID_RE.test(caId)) throw invalid(`Invalid CA certificate id: ${caId}`);
    return Object.values(this.s.certificates)
      .filter((c) => caId === undefined || c.caCertificateId === caId)
      .sort((a, b) => a.creationDate - b.creationDate)
      .map((c) => ({
        certificateArn: this.certArn(c.certificateId), certificateId: c.certificateId,
        status: c.status, certificateMode: c.certificateMode, creationDate: c.creationDate / 1000
      }));
  }

  /**
   * UpdateCertificate. AWS refuses PENDING_TRANSFER/PENDING_ACTIVATION as targets (they
   * are set only by AWS itself) and any change of a certificate pending a transfer.
   */
  updateCertStatus (id, newStatus) {
    if (!CERT_STATUSES.includes(newStatus)) throw invalid(`Invalid newStatus: ${newStatus}`);
    const c = this.cert(id);
    if (newStatus === 'PENDING_TRANSFER' || newStatus === 'PENDING_ACTIVATION') {
      throw new AwsError('CertificateStateException', `Cannot set the status of a certificate to ${newStatus}`);
    }
    if (c.status === 'PENDING_TRANSFER') {
      throw new AwsError('CertificateStateException', 'The certificate is pending a transfer');
    }
    const from = c.status;
    c.status = newStatus;
    c.lastModifiedDate = Date.now();
    c.customerVersion++;
    this.changed();
    if (from !== newStatus) this.emit('certificateStatus', { certificateId: id, from, to: newStatus });
  }

  deleteCert (id, forceDelete) {
    const c = this.cert(id);
    if (c.status === 'ACTIVE') throw new AwsError('CertificateStateException', 'Certificate must be deactivated (not ACTIVE) before deletion.');
    const arn = this.certArn(id);
    const things = Object.keys(this.s.thingPrincipals).filter((t) => this.s.thingPrincipals[t].includes(arn));
    if (things.length) throw new AwsError('DeleteConflictException', `Things are still attached to the certificate: ${things.join(', ')}`);
    const pols = this.s.principalPolicies[arn] || [];
    if (pols.length && !forceDelete) throw new AwsError('DeleteConflictException', `Policies are still attached to the certificate: ${pols.join(', ')}`);
    delete this.s.principalPolicies[arn];
    delete this.s.certificates[id];
    this.changed();
    this.emit('authzChanged');
  }

  // ---- policies -----------------------------------------------------------------------

  createPolicy (name, document) {
    if (!POLICY_NAME_RE.test(name || '')) throw invalid(`Invalid policy name: ${name}`);
    const compiled = parsePolicy(document);
    if (this.s.policies[name]) {
      throw new AwsError('ResourceAlreadyExistsException', `Policy ${name} already exists.`, { resourceId: name, resourceArn: this.arn('policy', name) });
    }
    const now = Date.now();
    this.s.policies[name] = { document, versionId: '1', creationDate: now, lastModifiedDate: now, generationId: randomBytes(32).toString('hex') };
    this.compiledPolicies.set(name, compiled);
    this.changed();
    return { policyName: name, policyArn: this.arn('policy', name), policyDocument: document, policyVersionId: '1' };
  }

  getPolicy (name) {
    const p = this.s.policies[name];
    if (!p) throw notFound(`Policy ${name} does not exist`);
    return {
      policyName: name, policyArn: this.arn('policy', name), policyDocument: p.document,
      defaultVersionId: p.versionId, creationDate: p.creationDate / 1000,
      lastModifiedDate: p.lastModifiedDate / 1000, generationId: p.generationId
    };
  }

  /** AttachPolicy / AttachPrincipalPolicy: only certificate targets are modelled. */
  attachPolicy (name, target) {
    if (!this.s.policies[name]) throw notFound(`Policy ${name} does not exist`);
    const id = this.certIdFromArn(target);
    this.cert(id);
    const list = this.s.principalPolicies[target] || (this.s.principalPolicies[target] = []);
    if (!list.includes(name)) {
      if (list.length >= 10) throw new AwsError('LimitExceededException', 'At most 10 policies can be attached to a principal');
      list.push(name);
      this.changed();
      this.emit('authzChanged');
    }
  }

  /** DetachPolicy: removing a policy that is not attached is not an error. */
  detachPolicy (name, target) {
    this.certIdFromArn(target);
    const list = this.s.principalPolicies[target] || [];
    const i = list.indexOf(name);
    if (i >= 0) {
      list.splice(i, 1);
      if (list.length === 0) delete this.s.principalPolicies[target];
      this.changed();
      this.emit('authzChanged');
    }
  }

  /** DeletePolicy: refused while the policy is attached to a principal. */
  deletePolicy (name) {
    if (!this.s.policies[name]) throw notFound(`Policy ${name} does not exist`);
    const users = Object.keys(this.s.principalPolicies).filter((t) => this.s.principalPolicies[t].includes(name));
    if (users.length) throw new AwsError('DeleteConflictException', `The policy ${name} is attached to one or more principals`);
    delete this.s.policies[name];
    this.compiledPolicies.delete(name);
    this.changed();
  }

  listPolicies () {
    return Object.keys(this.s.policies).sort().map((n) => ({ policyName: n, policyArn: this.arn('policy', n) }));
  }

  listAttachedPolicies (target) {
    const id = this.certIdFromArn(target);
    this.cert(id);
    return (this.s.principalPolicies[target] || []).map((n) => ({ policyName: n, policyArn: this.arn('policy', n) }));
  }

  /** Compiled statements of every policy attached to the certificate. */
  policiesForCert (certId) {
    const names = this.s.principalPolicies[this.certArn(certId)] || [];
    return names.map((n) => {
      let c = this.compiledPolicies.get(n);
      if (!c) { c = parsePolicy(this.s.policies[n].document); this.compiledPolicies.set(n, c); }
      return c;
    });
  }

  // ---- things -------------------------------------------------------------------------

  /**
   * CreateThing is idempotent as in AWS: creating an existing thing with the same type and
   * attributes returns it; with different ones it is ResourceAlreadyExistsException.
   */
  createThing (name, { thingTypeName, attributePayload } = {}) {
    if (!THING_NAME_RE.test(name || '')) throw invalid(`Invalid thing name: ${name}`);
    if (thingTypeName !== undefined) throw notFound(`Thing type ${thingTypeName} does not exist (thing types are not modelled)`);
    const attributes = checkAttributes((attributePayload && attributePayload.attributes) || {});
    const t = this.s.things[name];
    if (t) {
      if (JSON.stringify(t.attributes) !== JSON.stringify(attributes)) {
        throw new AwsError('ResourceAlreadyExistsException', `Thing ${name} already exists with different tags/attributes`, { resourceId: t.thingId, resourceArn: this.arn('thing', name) });
      }
    } else {
      this.s.things[name] = { thingId: randomUUID(), attributes, version: 1 };
      this.changed();
    }
    return { thingName: name, thingArn: this.arn('thing', name), thingId: this.s.things[name].thingId };
  }

  /**
   * UpdateThing: attributePayload.attributes replace all attributes, or with merge:true are
   * merged into them, where an empty value removes that attribute (AttributePayload in the
   * IoT API reference); expectedVersion, when given, must be the thing's version, else
   * VersionConflictException. Every update increments the version.
   */
  updateThing (name, { attributePayload, expectedVersion, thingTypeName, removeThingType } = {}) {
    const t = this.thing(name);
    if (thingTypeName !== undefined || removeThingType) throw invalid('Thing types are not modelled by iot-sim');
    if (expectedVersion !== undefined && expectedVersion !== null && Number(expectedVersion) !== t.version) {
      throw new AwsError('VersionConflictException', `The version of thing ${name} is ${t.version}, not ${expectedVersion}`);
    }
    if (attributePayload && attributePayload.attributes) {
      const given = attributePayload.attributes;
      let next;
      if (attributePayload.merge) {
        next = { ...t.attributes };
        for (const [k, v] of Object.entries(given)) { if (v === '') delete next[k]; else next[k] = v; }
      } else {
        next = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== ''));
      }
      t.attributes = checkAttributes(next);
    }
    t.version++;
    this.changed();
  }

  thing (name) {
    const t = this.s.things[name];
    if (!t) throw notFound(`Thing ${name} cannot be found.`);
    return t;
  }

  describeThing (name) {
    const t = this.thing(name);
    return {
      defaultClientId: name, thingName: name, thingId: t.thingId, thingArn: this.arn('thing', name),
      attributes: t.attributes, version: t.version
    };
  }

  attachThingPrincipal (name, principal) {
    this.thing(name);
    const id = this.certIdFromArn(principal);
    this.cert(id);
    const list = this.s.thingPrincipals[name] || (this.s.thingPrincipals[name] = []);
    if (!list.includes(principal)) {
      list.push(principal);
      this.changed();
      this.emit('authzChanged');
    }
  }

  listThingPrincipals (name) {
    this.thing(name);
    return [...(this.s.thingPrincipals[name] || [])];
  }

  detachThingPrincipal (name, principal) {
    this.thing(name);
    this.certIdFromArn(principal);
    const list = this.s.thingPrincipals[name] || [];
    const i = list.indexOf(principal);
    if (i >= 0) {
      list.splice(i, 1);
      if (list.length === 0) delete this.s.thingPrincipals[name];
      this.changed();
      this.emit('authzChanged');
    }
  }

  /**
   * DeleteThing: deleting a thing that does not exist succeeds, as in AWS; a thing with
   * principals attached cannot be deleted; expectedVersion must match when given.
   */
  deleteThing (name, expectedVersion) {
    const t = this.s.things[name];
    if (!t) return;
    if (expectedVersion !== undefined && Number(expectedVersion) !== t.version) {
      throw new AwsError('VersionConflictException', `The version of thing ${name} is ${t.version}, not ${expectedVersion}`);
    }
    if ((this.s.thingPrincipals[name] || []).length) throw invalid(`Cannot delete thing ${name}: principals are still attached`);
    delete this.s.things[name];
    this.changed();
    this.emit('authzChanged');
  }

  listThings () {
    return Object.keys(this.s.things).sort().map((n) => ({
      thingName: n, thingArn: this.arn('thing', n), attributes: this.s.things[n].attributes, version: this.s.things[n].version
    }));
  }

  /** Names of the things the certificate is attached to. */
  thingsForCert (certId) {
    const arn = this.certArn(certId);
    return Object.keys(this.s.thingPrincipals).filter((t) => this.s.thingPrincipals[t].includes(arn));
  }

  // ---- topic rules --------------------------------------------------------------------

  createRule (name, rule) {
    if (this.s.rules[name]) throw new AwsError('ResourceAlreadyExistsException', `Rule ${name} already exists`, { resourceId: name, resourceArn: this.arn('rule', name) });
    this.s.rules[name] = { ...rule, createdAt: Date.now() };
    this.changed();
  }

  replaceRule (name, rule) {
    const old = this.rule(name);
    this.s.rules[name] = { ...rule, createdAt: old.createdAt };
    this.changed();
  }

  deleteRule (name) {
    this.rule(name);
    delete this.s.rules[name];
    this.changed();
  }

  rule (name) {
    const r = this.s.rules[name];
    if (!r) throw new AwsError('UnauthorizedException', `Rule ${name} does not exist`);
    return r;
  }

  rules () { return Object.entries(this.s.rules); }
}
