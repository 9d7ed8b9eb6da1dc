// Admission of a device certificate, as AWS IoT decides it. Pure decision logic over the
// registry and the TLS facts of one connection; the broker acts on the result.
//
// Outcomes:
//   {kind:'active', cert}        registered and ACTIVE: go on to the iot:Connect check
//   {kind:'pending', cert}       PENDING_ACTIVATION: publish the registered event again, close
//   {kind:'register', ca, leaf}  unknown certificate, issuer is a registered ACTIVE CA with
//                                auto-registration: register PENDING_ACTIVATION, publish, close
//   {kind:'refuse', reason}      anything else (reason is a stable camelCase token)

import { X509Certificate } from 'node:crypto';
import { certificateId, currentlyValid } from './pki.js';

/**
 * TLS facts of a connection, read once after the handshake.
 * chainDer: DER of every certificate the client sent after its leaf.
 */
export function tlsFacts (socket) {
  // Read the detailed chain first and derive the leaf from it: in Node 20, calling
  // getPeerX509Certificate() first leaves getPeerCertificate(true) without the issuers.
  const chainDer = [];
  const c = socket.getPeerCertificate(true);
  const leaf = c && c.raw ? new X509Certificate(c.raw) : null;
  if (c && c.raw) {
    const seen = new Set([c]);
    for (let i = c.issuerCertificate; i && !seen.has(i) && i.raw; i = i.issuerCertificate) {
      seen.add(i);
      chainDer.push(i.raw);
    }
  }
  return {
    leaf: leaf || null,
    certificateId: leaf ? certificateId(leaf) : null,
    chainDer,
    servername: socket.servername || null,
    alpn: socket.alpnProtocol || null,
    tlsVersion: socket.getProtocol()
  };
}

/**
 * @param {import('./registry.js').Registry} registry
 * @param {ReturnType<typeof tlsFacts>} facts
 * @param {{requireCaInChain:boolean}} opts
 */
export function decide (registry, facts, opts) {
  if (!facts.leaf) return { kind: 'refuse', reason: 'noClientCertificate' };
  const cert = registry.findCert(facts.certificateId);
  if (cert) {
    if (cert.status === 'ACTIVE') {
      if (!currentlyValid(facts.leaf)) return { kind: 'refuse', reason: 'certificateExpired' };
      return { kind: 'active', cert };
    }
    if (cert.status === 'PENDING_ACTIVATION') return { kind: 'pending', cert };
    return { kind: 'refuse', reason: `certificate${cert.status[0]}${cert.status.slice(1).toLowerCase().replace(/_(\w)/g, (m, ch) => ch.toUpperCase())}` };
  }
  const ca = registry.findIssuingCa(facts.leaf);
  if (!ca) return { kind: 'refuse', reason: 'unknownCa' };
  if (ca.status !== 'ACTIVE') return { kind: 'refuse', reason: 'caInactive' };
  if (ca.autoRegistrationStatus !== 'ENABLE') return { kind: 'refuse', reason: 'autoRegistrationDisabled' };
  if (!currentlyValid(facts.leaf)) return { kind: 'refuse', reason: 'certificateNotValidNow' };
  const caDer = registry.caX509(ca.certificateId).raw;
  const caInChain = facts.chainDer.some((d) => d.equals(caDer));
  const sni = Boolean(facts.servername);
  if (ca.certificateMode === 'SNI_ONLY' && !sni) return { kind: 'refuse', reason: 'sniRequired' };
  if (opts.requireCaInChain && !caInChain) return { kind: 'refuse', reason: 'caNotInChain' };
  if (!caInChain && !sni) return { kind: 'refuse', reason: 'neitherCaNorSni' };
  return { kind: 'register', ca, leaf: facts.leaf };
}

/** Payload of $aws/events/certificates/registered/<caCertificateId>. */
export function registeredEvent (registry, cert) {
  return {
    certificateId: cert.certificateId,
    caCertificateId: cert.caCertificateId,
    timestamp: Date.now(),
    certificateStatus: 'PENDING_ACTIVATION',
    awsAccountId: registry.accountId,
    certificateRegistrationTimestamp: String(cert.creationDate)
  };
}
