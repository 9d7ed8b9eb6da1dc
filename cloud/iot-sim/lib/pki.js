// Certificates: the sim's own root CA and server certificate (created with openssl on
// first start), and helpers to parse PEM and compute AWS certificate ids.

import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** AWS certificate id: SHA-256 of the DER encoding, 64 lowercase hex characters. */
export function certificateId (x509) {
  return createHash('sha256').update(x509.raw).digest('hex');
}

/** Parse the first PEM certificate of `pem`; null when it is not a certificate. */
export function parseCertificate (pem) {
  if (typeof pem !== 'string' || !pem.includes('-----BEGIN CERTIFICATE-----')) return null;
  try { return new X509Certificate(pem); } catch { return null; }
}

/** True when `issuer` directly signed `cert` (names chain and the signature verifies). */
export function directlyIssued (cert, issuer) {
  try { return cert.checkIssued(issuer) && cert.verify(issuer.publicKey); } catch { return false; }
}

/** True when now lies within the certificate's validity period. */
export function currentlyValid (cert, now = Date.now()) {
  return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
}

/** The value of the (last) CN attribute in an X509Certificate subject, or null. */
export function commonName (cert) {
  const m = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject);
  return m ? m[1] : null;
}

function openssl (args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Ensure DIR/tls holds the sim's root CA (stand-in for Amazon Root CA 1) and a server
 * certificate for `endpoint` (SAN: endpoint, localhost, 127.0.0.1, ::1). The CA is made
 * once; the server certificate is remade when the endpoint changes. Keys are EC P-256 so
 * ECDHE-ECDSA-AES128-GCM-SHA256, the suite AWS recommends, is negotiable.
 */
export function ensureServerPki (dataDir, endpoint) {
  const dir = path.join(dataDir, 'tls');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (n) => path.join(dir, n);
  if (!fs.existsSync(f('root-ca.pem')) || !fs.existsSync(f('root-ca.key'))) {
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'root-ca.key'], dir);
    openssl(['req', '-x509', '-new', '-key', 'root-ca.key', '-sha256', '-days', '3650',
      '-subj', '/O=iot-sim/CN=iot-sim Root CA', '-out', 'root-ca.pem.tmp',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
    fs.renameSync(f('root-ca.pem.tmp'), f('root-ca.pem'));
    fs.rmSync(f('server.pem'), { force: true });
  }
  let current = null;
  try { current = fs.readFileSync(f('server.endpoint'), 'utf8'); } catch {}
  if (current !== endpoint || !fs.existsSync(f('server.pem'))) {
    const san = [`DNS:${endpoint}`, 'DNS:localhost', 'IP:127.0.0.1', 'IP:::1'];
    if (/^[0-9.]+$/.test(endpoint) || endpoint.includes(':')) san[0] = `IP:${endpoint}`;
    const ext = [
      'basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth', `subjectAltName=${[...new Set(san)].join(',')}`
    ].join('\n') + '\n';
    fs.writeFileSync(f('server.ext'), ext);
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'server.key'], dir);
    openssl(['req', '-new', '-key', 'server.key', '-subj', `/CN=${endpoint}`, '-out', 'server.csr'], dir);
    openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'root-ca.pem', '-CAkey', 'root-ca.key',
      '-CAcreateserial', '-days', '825', '-sha256', '-extfile', 'server.ext', '-out', 'server.pem.tmp'], dir);
    fs.renameSync(f('server.pem.tmp'), f('server.pem'));
    fs.writeFileSync(f('server.endpoint'), endpoint);
  }
  return {
    rootCaPath: f('root-ca.pem'),
    key: fs.readFileSync(f('server.key')),
    cert: fs.readFileSync(f('server.pem'))
  };
}
