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
 * `startServers(mode, dir)` returns the URLs and PIDs, the controller's extra configuration, the etcd client
 * options for the bench's own etcd calls (raw compare-and-swap, reading the log back) and `nodeConnect(node)`, the
 * connectNats options of a node's agent. Every server started here is tracked; `stopAll()` stops them (SIGTERM,
 * then SIGKILL) and `killAllSync()` is the last resort for process 'exit'.
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

const MODES = {
  plain: 'plain (no authentication, no TLS)',
  secured: 'secured (NATS users + TLS, etcd TLS + user)',
};

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

async function startSecured(dir) {
  const [sec, { auth, caFile }] = await Promise.all([
    lab.etcdAuth().startSecureEtcd({ dir, name: 'etcd' }).then((s) => (track(s.etcd), s)),
    natsTls(dir).then(async (tls) => {
      const a = await lab.natsAuth().startAuthNats({ dir, name: 'nats', extraConfig: tls.config });
      track(a.nats);
      return { auth: a, caFile: tls.caFile };
    }),
  ]);
  return {
    etcd: { url: sec.etcd.url, pid: sec.etcd.pid },
    nats: { url: auth.nats.url, pid: auth.nats.pid },
    controller: {
      natsCreds: await auth.controllerCredsFile('bench'),
      natsCa: caFile,
      etcdCa: sec.pki.caFile,
      etcdCert: sec.client.certFile,
      etcdKey: sec.client.keyFile,
      etcdUser: sec.user,
      etcdPasswordFile: sec.passwordFile,
    },
    // The same user and files the controller has (its password file is read back, as the controller reads it).
    etcdClient: {
      endpoints: [sec.etcd.url],
      tls: { ca: sec.pki.ca, cert: sec.client.cert, key: sec.client.key },
      auth: { username: sec.user, password: fs.readFileSync(sec.passwordFile, 'utf8').trim() },
    },
    /** A node agent's connection: its own creds (issued now), the NATS CA, its inbox prefix. */
    async nodeConnect(node) {
      const { nodeInboxPrefix } = require('@underlay/core');
      return { creds: await auth.nodeCredsFile(node), tls: { ca: caFile }, inboxPrefix: nodeInboxPrefix(node) };
    },
  };
}

/** Starts etcd and nats-server in `dir` for `mode` (plain or secured). */
async function startServers(mode, dir) {
  if (mode === 'plain') return startPlain(dir);
  if (mode === 'secured') return startSecured(dir);
  throw new Error(`unknown mode ${mode} (plain or secured)`);
}

module.exports = { MODES, startServers, stopAll, killAllSync, sleep };
