// identity-key.mjs FILE: writes a new EC P-256 private key (PKCS #8 PEM, the
// form the gateway's identity.signing_key_file reads) to FILE, unless FILE
// already exists: the key stays the same across restarts, so identity
// assertions signed before a restart still verify after it.
//
// docker-compose.yml runs it once (service identity-key) into the identity-key
// volume, which the gateway mounts read-only. The file is readable by its owner
// only; run as root, it hands the file to 65532, the gateway image's user.
// Anyone who can read the volume can sign identities the upstreams trust: for
// production, manage the key as any other secret (docs/federation-identity.md).
import { generateKeyPairSync } from 'node:crypto';
import { chownSync, existsSync, writeFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: node identity-key.mjs FILE');
  process.exit(2);
}
if (existsSync(file)) {
  console.log(`identity-key: ${file} exists; keeping it`);
  process.exit(0);
}
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
// flag wx: never overwrite a file that appeared meanwhile.
writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
if (process.getuid?.() === 0) {
  chownSync(file, 65532, 65532);
}
console.log(`identity-key: wrote a new EC P-256 key to ${file}`);
