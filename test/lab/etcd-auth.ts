// TLS and users for a lab etcd: makes the certificates (test/lab/pki.ts) and turns authentication on with the
// etcd3 client's auth API (what `etcdctl user add root; etcdctl auth enable` do): users root and `underlay`
// (role `underlay`: read-write on /underlay/). The client certificate's CN names no user, so a client with the
// certificate but without a password is still nobody.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Etcd3, Range } from 'etcd3';
import { makePki, type CertFiles, type Pki } from './pki';
import { startEtcd, type EtcdService, type ServiceOptions } from './services';

export interface SecureEtcd {
  etcd: EtcdService;
  pki: Pki;
  /** Client certificate (CN underlay-client) of the etcd CA. */
  client: CertFiles;
  rootPassword: string;
  user: string;
  password: string;
  /** The password in a file of mode 0600. */
  passwordFile: string;
}

const pw = () => crypto.randomBytes(18).toString('base64url');

/** Starts etcd with client TLS (certificates required) and, unless `auth: false`, users. */
export async function startSecureEtcd(opts: ServiceOptions & { auth?: boolean }): Promise<SecureEtcd> {
  const pkiDir = path.join(opts.dir, `pki-${crypto.randomBytes(3).toString('hex')}`);
  const pki = await makePki(pkiDir);
  const host = opts.host ?? '127.0.0.1';
  const server = await pki.issue('etcd-server', { cn: 'etcd-server', server: true, client: true, ips: ['127.0.0.1', ...(host !== '127.0.0.1' && host !== '0.0.0.0' ? [host] : [])], dns: ['localhost'] });
  const client = await pki.issue('etcd-client', { cn: 'underlay-client', client: true });
  const etcd = await startEtcd({
    ...opts,
    tls: { caFile: pki.caFile, serverCertFile: server.certFile, serverKeyFile: server.keyFile, clientCertFile: client.certFile, clientKeyFile: client.keyFile },
  });
  const out: SecureEtcd = { etcd, pki, client, rootPassword: pw(), user: 'underlay', password: pw(), passwordFile: path.join(pkiDir, 'etcd-password') };
  fs.writeFileSync(out.passwordFile, `${out.password}\n`, { mode: 0o600 });
  fs.chmodSync(out.passwordFile, 0o600);
  if (opts.auth !== false) {
    try {
      await enableAuth(out);
    } catch (e) {
      await etcd.stop();
      throw e;
    }
  }
  return out;
}

async function enableAuth(s: SecureEtcd): Promise<void> {
  const c = new Etcd3({ hosts: s.etcd.url, credentials: { rootCertificate: s.pki.ca, certChain: s.client.cert, privateKey: s.client.key } });
  const o = { deadline: Date.now() + 15_000 };
  try {
    await c.role('root').create(o);
    await c.user('root').create(s.rootPassword, o);
    await c.user('root').addRole('root', o);
    await c.role('underlay').create(o);
    await c.role('underlay').grant({ permission: 'Readwrite', range: Range.prefix('/underlay/') }, o);
    await c.user(s.user).create(s.password, o);
    await c.user(s.user).addRole('underlay', o);
    await c.auth.authEnable(o);
  } finally {
    c.close();
  }
}
