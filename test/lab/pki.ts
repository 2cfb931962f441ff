// A throw-away certificate authority for tests: a CA, server and client certificates (EC P-256, valid two days),
// made with the openssl command line (argument arrays, no shell) in a directory of the test's own.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { requireExecutable } from './run';

export interface CertFiles {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

export interface Pki {
  dir: string;
  caFile: string;
  ca: Buffer;
  /** Issues a certificate signed by this CA (server: serverAuth with the SANs; client: clientAuth). */
  issue(name: string, o: { cn: string; server?: boolean; client?: boolean; ips?: string[]; dns?: string[] }): Promise<CertFiles>;
}

function openssl(args: string[], cwd: string): Promise<void> {
  const bin = requireExecutable('openssl', 'install the Debian package openssl');
  return new Promise((resolve, reject) => {
    execFile(bin, args, { cwd, timeout: 30_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`openssl ${args.slice(0, 2).join(' ')} failed: ${stderr || err.message}`));
      else resolve();
    });
  });
}

/** Makes a CA in `dir` (created, mode 0700; keys 0600). */
export async function makePki(dir: string, caName = 'underlay-test-ca'): Promise<Pki> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caKey = path.join(dir, 'ca.key');
  const caFile = path.join(dir, 'ca.crt');
  await openssl(
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', caKey, '-out', caFile, '-days', '2', '-subj', `/CN=${caName}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  fs.chmodSync(caKey, 0o600);
  let serial = 1;
  return {
    dir,
    caFile,
    ca: fs.readFileSync(caFile),
    async issue(name, o) {
      const keyFile = path.join(dir, `${name}.key`);
      const csr = path.join(dir, `${name}.csr`);
      const certFile = path.join(dir, `${name}.crt`);
      const ext = path.join(dir, `${name}.ext`);
      const usages = [o.server ? 'serverAuth' : '', o.client ? 'clientAuth' : ''].filter(Boolean).join(',');
      const sans = [...(o.ips ?? []).map((ip) => `IP:${ip}`), ...(o.dns ?? []).map((d) => `DNS:${d}`)];
      fs.writeFileSync(
        ext,
        [
          'basicConstraints=critical,CA:FALSE',
          'keyUsage=critical,digitalSignature,keyEncipherment',
          `extendedKeyUsage=${usages || 'serverAuth,clientAuth'}`,
          ...(sans.length ? [`subjectAltName=${sans.join(',')}`] : []),
          '',
        ].join('\n'),
      );
      await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', csr, '-subj', `/CN=${o.cn}`], dir);
      fs.chmodSync(keyFile, 0o600);
      await openssl(['x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-set_serial', String(serial++), '-days', '2', '-out', certFile, '-extfile', ext], dir);
      return { certFile, keyFile, cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
    },
  };
}

/** GET over HTTPS with a client certificate; resolves with status and body (rejects on TLS errors or timeout). */
export function httpsGet(url: string, tls: { ca: Buffer; cert?: Buffer; key?: Buffer }, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca: tls.ca, cert: tls.cert, key: tls.key, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}
