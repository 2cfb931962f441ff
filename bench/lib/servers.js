'use strict';
/**
 * The etcd and nats-server of bench/ipam.js, started with the test lab's own helpers (test/lab, loaded through the
 * transpile-on-require hook of ./docker-run-ts.js), in one of two modes:
 *
 * - `plain`: etcd over http:// and nats-server (JetStream) without users or TLS.
 * - `secured`: everything on, as issue 10 deploys it. etcd with client TLS (certificates required) and
 *   authentication (users root and `underlay`, read-write on /underlay/: test/lab/etcd-auth.ts); nats-server with
 *   decentralized authentication (operator, account, signing key: test/lab/nats-auth.ts) and TLS (a `tls {}` block
 *   with a server certificate for 127.0.0.1 from a CA of its own, made with the openssl CLI: test/lab/pki.ts). The
 *   controller gets controller creds, the NATS CA, the etcd CA, client certificate, user and password file; each
 *   requester connection gets its own node's creds, the NATS CA and that node's inbox prefix.
 *
 * `startServers(mode, dir, parts)` returns the URLs and PIDs, the controller's extra configuration, the etcd
 * client options for the bench's own etcd calls (raw compare-and-swap, reading the log back) and `nodeConnect(node)`,
 * the connectNats options of a node's agent. `parts` (default all of SECURED_PARTS: nats-auth, nats-tls, etcd-tls,
 * etcd-auth) lets a diagnostic run turn on only some of them, to see what each costs. Every server started here is
 * tracked; `stopAll()` stops them (SIGTERM, then SIGKILL) and `killAllSync()` is the last resort for process 'exit'.
 */
const fs = require('node:fs');
const path = require('node:path');

require('./docker-run-ts.js').install();

const lab = {
  services: () => require('../../test/lab/services'),
  etcdAuth: () => require('../../test/lab/etcd-auth'),
  natsAuth: () => require('../../test/lab/nats-auth'),
  pki: () => require('../../test/lab/pki'),
};

/** What the secured mode turns on (all by default; fewer only to see what each part costs). */
const SECURED_PARTS = ['nats-auth', 'nats-tls', 'etcd-tls', 'etcd-auth'];

/** How a mode is named in the report. */
function modeLabel(mode, parts = SECURED_PARTS) {
  if (mode === 'plain') return 'plain (no authentication, no TLS)';
  if (SECURED_PARTS.every((p) => parts.includes(p))) return 'secured (NATS users + TLS, etcd TLS + user)';
  return `secured, only ${parts.join(' + ') || 'nothing'}`;
}

/** Every server started here: `{ pid, stop() }`. */
const running = new Set();

function track(svc) {
  const entry = { pid: svc.pid, stop: () => svc.stop() };
  running.add(entry);
  return entry;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function stopAll() {
  const all = [...running];
  running.clear();
  await Promise.all(all.map((s) => s.stop().catch(() => {})));
}

function killAllSync() {
  for (const s of running) {
    try {
      process.kill(s.pid, 'SIGKILL');
    } catch {}
  }
  running.clear();
}

async function startPlain(dir) {
  const { startEtcd, startNats } = lab.services();
  const [etcd, nats] = await Promise.all([
    startEtcd({ dir, name: 'etcd' }).then((s) => (track(s), s)),
    startNats({ dir, name: 'nats' }).then((s) => (track(s), s)),
  ]);
  return {
    etcd: { url: etcd.url, pid: etcd.pid },
    nats: { url: nats.url, pid: nats.pid },
    controller: {},
    etcdClient: { endpoints: [etcd.url] },
    nodeConnect: async () => ({}),
  };
}

/** nats-server's TLS block: its certificate (IP SAN 127.0.0.1) from a CA of its own. Clients need the CA file. */
async function natsTls(dir) {
  const pki = await lab.pki().makePki(path.join(dir, 'nats-pki'), 'underlay-bench-nats-ca');
  const server = await pki.issue('nats-server', { cn: 'nats-server', server: true, ips: ['127.0.0.1'], dns: ['localhost'] });
  const q = JSON.stringify;
  return { caFile: pki.caFile, config: `tls {\n  cert_file: ${q(server.certFile)}\n  key_file: ${q(server.keyFile)}\n  ca_file: ${q(pki.caFile)}\n}\n` };
}

async function startSecured(dir, parts) {
  const on = (p) => parts.includes(p);
  if (on('etcd-auth') && !on('etcd-tls')) throw new Error('etcd-auth needs etcd-tls here (the lab makes etcd users over TLS only)');
  const { startEtcd, startNats } = lab.services();
  const [sec, plainEtcd, nats] = await Promise.all([
    on('etcd-tls') ? lab.etcdAuth().startSecureEtcd({ dir, name: 'etcd', auth: on('etcd-auth') }).then((s) => (track(s.etcd), s)) : undefined,
    on('etcd-tls') ? undefined : startEtcd({ dir, name: 'etcd' }).then((s) => (track(s), s)),
    (async () => {
      const tls = on('nats-tls') ? await natsTls(dir) : undefined;
      if (on('nats-auth')) {
        const auth = await lab.natsAuth().startAuthNats({ dir, name: 'nats', extraConfig: tls?.config });
        track(auth.nats);
        return { svc: auth.nats, auth, caFile: tls?.caFile };
      }
      const svc = await startNats({ dir, name: 'nats', config: tls?.config });
      track(svc);
      return { svc, caFile: tls?.caFile };
    })(),
  ]);
  const etcd = sec ? sec.etcd : plainEtcd;
  const controller = {};
  if (nats.auth) controller.natsCreds = await nats.auth.controllerCredsFile('bench');
  if (nats.caFile) controller.natsCa = nats.caFile;
  const etcdClient = { endpoints: [etcd.url] };
  if (sec) {
    Object.assign(controller, { etcdCa: sec.pki.caFile, etcdCert: sec.client.certFile, etcdKey: sec.client.keyFile });
    etcdClient.tls = { ca: sec.pki.ca, cert: sec.client.cert, key: sec.client.key };
    if (on('etcd-auth')) {
      Object.assign(controller, { etcdUser: sec.user, etcdPasswordFile: sec.passwordFile });
      // The same user the controller has (its password file read back, as the controller reads it).
      etcdClient.auth = { username: sec.user, password: fs.readFileSync(sec.passwordFile, 'utf8').trim() };
    }
  }
  return {
    etcd: { url: etcd.url, pid: etcd.pid },
    nats: { url: nats.svc.url, pid: nats.svc.pid },
    controller,
    etcdClient,
    /** A node agent's connection: its own creds (issued now) and inbox prefix, the NATS CA. */
    async nodeConnect(node) {
      const { nodeInboxPrefix } = require('@underlay/core');
      const o = {};
      if (nats.auth) Object.assign(o, { creds: await nats.auth.nodeCredsFile(node), inboxPrefix: nodeInboxPrefix(node) });
      if (nats.caFile) o.tls = { ca: nats.caFile };
      return o;
    },
  };
}

/** Starts etcd and nats-server in `dir` for `mode` (plain, or secured with `parts`). */
async function startServers(mode, dir, parts = SECURED_PARTS) {
  if (mode === 'plain') return startPlain(dir);
  if (mode === 'secured') return startSecured(dir, parts);
  throw new Error(`unknown mode ${mode} (plain or secured)`);
}

module.exports = { SECURED_PARTS, modeLabel, startServers, stopAll, killAllSync, sleep };
