#!/usr/bin/env node
'use strict';
/**
 * `npm run bench:scale` (issue 14, item 3): what a big cluster costs. Real etcd and nats-server on loopback (bench/lib/
 * servers.js, plain mode), the real controller PROCESS (`underlay controller`), simulated agents that are real NATS
 * clients speaking the agent's protocol. Steps (each one timed; bench/README.md says what each figure means):
 *
 *  1. messages to an uninvolved agent, SMALL (20) agents: one observer agent (the agent's ClusterView on its own NATS
 *     connection) allocates in a pool of its own at the per-agent rate; the other 19 node identities allocate in
 *     another pool at the same per-agent rate (multiplexed over 8 NATS connections, each request naming its node, as
 *     bench/ipam.js does) for --window-ms. Counted: every message the observer's connection receives from the start of
 *     the window until its view has caught up with the controller's head.
 *  2. route convergence at --agents simulated agents: `bench/routes.js --sim` in one process per CPU (bench/lib/
 *     sim-shards.js; BENCH_SIM_PROCESSES=1: one process) (each agent: its own NATS
 *     connection, the agent's ClusterView and RouteService, an in-memory route table); an endpoint claims a /32 block
 *     and the time runs until the route is on every other agent. p99 over --endpoints endpoints.
 *  3. messages to an uninvolved agent, --agents agents: as 1 (the simulated agents of 2 are stopped first: the count
 *     is what one agent receives, and 1,000 full views folding every event would only starve the machine).
 *     msgs_per_agent_ratio = step 3's count / step 1's count (flat per-agent cost: ≤ 1.1).
 *  4. controller memory, cold start and `ipam usage` at --allocations-small (100k) and --allocations (1M): a fresh
 *     etcd and NATS; the allocations are decided and applied by core's ClusterEngine (the controller's own decide +
 *     fold: RequestPool, then RequestAddress from 1,000 nodes) in this process and written as a snapshot through the
 *     snapshot code the controller uses (snapshotJsonParts + EtcdSnapshots.write, and the log head at its seq). Then a
 *     controller process starts from it: cold start = spawn until /healthz says leader at that seq; RSS (VmRSS) after
 *     it answered `GET /v1/ipam/usage` (every page, as the CLI reads it; the median of 5 is usage_100k_ms). Two agents'
 *     views start from the snapshot (until ready; printed beside, not in the last line): one by interest with no part
 *     in the pool (it reads the snapshot's head only) and one reading it whole.
 *  5. agent restart (bench/lib/agent-restart.js): a real agent process in a network namespace of its own, with
 *     --agent-endpoints (1,000) endpoints in its state files and in its Docker (a stand-in on a unix socket), restarted
 *     --restarts (3) times: spawn until its plugin socket serves a call that needs its state; the median is
 *     agent_restart_1k_ms. Needs root (ip netns).
 *
 * Last line of stdout, exactly:
 *   scale sim_agents=1000 route_p99_ms=<n> msgs_per_agent_ratio=<n> ctl_rss_mb_100k=<n> ctl_rss_mb_1m=<n> cold_start_1m_ms=<n> agent_restart_1k_ms=<n> usage_100k_ms=<n>
 * (NaN for a part skipped or failed). Exit 0 even when a target is missed (the line
 * before the last says so); 1 when the benchmark could not run. Progress goes to stderr.
 *
 * Flags (to scale down while developing): --agents N (1000), --small-agents N (20), --endpoints N (100),
 * --warmup N (10), --rate PER_AGENT_PER_S (0.5), --window-ms MS (10000), --allocations N (1000000),
 * --allocations-small N (100000), --agent-endpoints N (1000), --restarts N (3), --skip routes,ratio,restart,memory.
 * Diagnostics (environment): BENCH_SCALE_CONTROLLER_NODE_FLAGS, BENCH_SCALE_SIM_NODE_FLAGS and
 * BENCH_SCALE_AGENT_NODE_FLAGS, extra node flags for the controller processes, the simulated agents' process and the
 * restarted agent (e.g. `--cpu-prof --cpu-prof-dir=DIR`; the product does not run with them); BENCH_SCALE_KEEP=1 keeps
 * the temp dir (logs).
 */
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const http = require('node:http');
const net = require('node:net');
const { spawn } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const { randomUUID } = require('node:crypto');
const { startServers, stopAll, killAllSync, sleep } = require('./lib/servers.js');
const { stats, f1, table } = require('./lib/stats.js');
const { collect } = require('./lib/collect.js');
const { loadProduct } = require('./lib/product.js');
const { agentRestart } = require('./lib/agent-restart.js');
const { machineSpeed } = require('./lib/machine.js');
const { simShards } = require('./lib/sim-shards.js');

const ROOT = path.resolve(__dirname, '..');
const TARGET = { routeP99Ms: 200, ratio: 1.1, rss100kMb: 200, rss1mMb: 1200, coldStartMs: 3000, restartMs: 1000, usageMs: 200 };
const SIM = { ready: 'bench.routes.sim.ready', seen: 'bench.routes.sim.seen', pool: '198.18.0.0/16' };
const API_TOKEN = 'bench-scale-token-0123456789';
/** Blocks per usage request: the CLI's page size (cli/src/client.ts, PAGE_MAX). */
const USAGE_PAGE = 10_000;

function parseArgs(argv) {
  const o = { agents: 1000, smallAgents: 20, endpoints: 100, warmup: 10, rate: 0.5, windowMs: 10_000, allocations: 1_000_000, allocationsSmall: 100_000, agentEndpoints: 1000, restarts: 3, skip: [] };
  const num = (name, v, min) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: ${JSON.stringify(v)} is not a number ≥ ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split('=', 2);
    const v = inline ?? argv[++i];
    switch (flag) {
      case '--agents': o.agents = Math.floor(num('agents', v, 2)); break;
      case '--small-agents': o.smallAgents = Math.floor(num('small-agents', v, 2)); break;
      case '--endpoints': o.endpoints = Math.floor(num('endpoints', v, 1)); break;
      case '--warmup': o.warmup = Math.floor(num('warmup', v, 0)); break;
      case '--rate': o.rate = num('rate', v, 0.01); break;
      case '--window-ms': o.windowMs = Math.floor(num('window-ms', v, 1000)); break;
      case '--allocations': o.allocations = Math.floor(num('allocations', v, 1)); break;
      case '--allocations-small': o.allocationsSmall = Math.floor(num('allocations-small', v, 1)); break;
      case '--agent-endpoints': o.agentEndpoints = Math.floor(num('agent-endpoints', v, 1)); break;
      case '--restarts': o.restarts = Math.floor(num('restarts', v, 1)); break;
      case '--skip': o.skip = String(v).split(',').filter(Boolean); break;
      default: throw new Error(`unknown flag ${argv[i]} (see the head of bench/scale.js)`);
    }
  }
  if (o.agents > 5000) throw new Error('--agents: at most 5000 on one machine');
  if (o.allocationsSmall > o.allocations) throw new Error('--allocations-small must not exceed --allocations');
  return o;
}

const t0 = performance.now();
const progress = (msg) => process.stderr.write(`bench:scale: [${((performance.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
const now = () => performance.timeOrigin + performance.now();
const sc = { encode: (o) => Buffer.from(JSON.stringify(o)), decode: (b) => JSON.parse(Buffer.from(b).toString()) };

/** Every step's duration, printed at the end. */
const steps = [];
async function step(name, fn) {
  const s = performance.now();
  progress(`${name}…`);
  try {
    return await fn();
  } finally {
    const ms = performance.now() - s;
    steps.push([name, ms]);
    progress(`${name}: ${(ms / 1000).toFixed(1)} s`);
  }
}

// ---- processes started here (controller, simulated agents) ---------------------------------------------

const children = new Set();
function spawnLogged(args, logFile, cmd = process.execPath) {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}
async function stopChild(child, ms = 10_000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  if (await Promise.race([exited.then(() => true), sleep(ms).then(() => false)])) return;
  child.kill('SIGKILL');
  await exited;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function httpGet(port, p, ms = 10_000) {
  return new Promise((resolve, reject) => {
    // A new connection per request (agent: false): a kept-alive one is reset when the controller's idle timer (5 s)
    // fires after a long stall with the next request already queued on it (the first run's ECONNRESET at 1M).
    const req = http.get({ host: '127.0.0.1', port, path: p, headers: { authorization: `Bearer ${API_TOKEN}` }, timeout: ms, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${p}: no answer within ${ms} ms`)));
    req.on('error', reject);
  });
}

/** Starts `underlay controller`; resolves once /healthz says leader at `seq` (or later), with the time that took. */
async function startController({ dir, etcdUrl, natsUrl, name, seq = 0, timeoutMs = 120_000 }) {
  const port = await freePort();
  const logFile = path.join(dir, `${name}.log`);
  const started = now();
  const child = spawnLogged(
    [
      // Diagnostics only (e.g. `--cpu-prof --cpu-prof-dir=DIR`): extra node flags for the controller processes.
      ...(process.env.BENCH_SCALE_CONTROLLER_NODE_FLAGS ?? '').split(' ').filter(Boolean),
      path.join(ROOT, 'cli/bin/underlay.js'), 'controller',
      '--etcd', etcdUrl, '--nats', natsUrl, '--listen', `127.0.0.1:${port}`, '--name', name, '--api-token', API_TOKEN,
      // The bench makes no leaks: no collection while it measures.
      '--collect-interval-ms', '600000', '--unbound-grace-ms', '3600000',
    ],
    logFile,
  );
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`controller ${name} exited (${child.exitCode}); its log: ${logFile}`);
    if (Date.now() > deadline) throw new Error(`controller ${name} was not leader at seq ${seq} within ${timeoutMs} ms; its log: ${logFile}`);
    try {
      const r = await httpGet(port, '/healthz', 1_000);
      const h = r.status === 200 ? JSON.parse(r.body) : undefined;
      if (h?.role === 'leader' && h.seq >= seq) break;
    } catch {
      /* not listening yet */
    }
    await sleep(10);
  }
  return { child, port, logFile, readyMs: now() - started };
}

/** VmRSS and VmHWM of a process, MB. */
function memoryMb(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

// ---- the agents' side ------------------------------------------------------------------------------------

/**
 * Node identities that send the agent's RequestAddress over `conns` shared NATS connections (a request goes on
 * the subject of the node its body names, as an agent's does), so 1,000 agents do not need 1,000 connections.
 */
async function makeRequesters(adapters, natsUrl, conns) {
  const ncs = [];
  for (let i = 0; i < conns; i++) ncs.push(await adapters.connectNats(natsUrl, `bench-scale-load-${i}`));
  const clients = new Map();
  return {
    client(node, i) {
      let c = clients.get(node);
      if (!c) clients.set(node, (c = new adapters.RpcClient(ncs[i % ncs.length], node)));
      return c;
    },
    async close() {
      await Promise.all(ncs.map((nc) => nc.close().catch(() => undefined)));
    },
  };
}

/**
 * Every node of `nodes` sends RequestAddress at `rate` per second for `ms` (spread evenly: node k's turn comes
 * round robin), at most 256 in flight. Returns what was sent, answered and refused.
 */
async function allocateAtRate({ nodes, rate, ms, send }) {
  const perSecond = nodes.length * rate;
  const start = performance.now();
  let sent = 0;
  let ok = 0;
  let failed = 0;
  let firstError;
  const inflight = new Set();
  while (performance.now() - start < ms) {
    const due = Math.floor(((performance.now() - start) / 1000) * perSecond);
    while (sent < due && inflight.size < 256) {
      const node = nodes[sent % nodes.length];
      sent++;
      const p = send(node).then(
        () => ok++,
        (e) => {
          failed++;
          firstError ??= e.message;
        },
      );
      inflight.add(p);
      p.finally(() => inflight.delete(p));
    }
    await sleep(5);
  }
  await Promise.all(inflight);
  return { sent, ok, failed, firstError };
}

/**
 * One ratio step: an observer agent (ClusterView, own connection) and `agents - 1` other node identities, all
 * allocating at `rate`; the observer in a pool of its own. Counts the messages the observer's connection received.
 */
async function uninvolvedAgent({ adapters, core, V, natsUrl, ctlPort, agents, rate, windowMs, label, requesters }) {
  const obsNode = `obs-${label}`;
  const nc = await adapters.connectNats(natsUrl, `bench-scale-${obsNode}`);
  const rpc = new adapters.RpcClient(nc, obsNode);
  try {
    await rpc.call('nodeReport', { node: obsNode, address: '198.51.100.200', version: 'bench', endpoints: [] }, core.EmptyRes);
    const obsPool = await rpc.call('requestPool', { node: obsNode, space: 'underlay', pool: label === 'small' ? '172.16.0.0/16' : '172.17.0.0/16', subPool: '', options: {}, v6: false, requestId: randomUUID() }, core.RequestPoolRes);
    const loadPool = await requesters.client('load-0000', 0).call('requestPool', { node: 'load-0000', space: 'underlay', pool: label === 'small' ? '10.16.0.0/12' : '10.32.0.0/12', subPool: '', options: {}, v6: false, requestId: randomUUID() }, core.RequestPoolRes);
    // As the agent: delivery by interest (the cluster chain, its host's, the pool of its network).
    const view = new V.ClusterView({ nc, rpc, logger: () => {}, pools: () => [obsPool.poolId] });
    const byType = new Map();
    const take = view.take.bind(view);
    let counting = false;
    view.take = (ev) => {
      if (counting) byType.set(ev.type, (byType.get(ev.type) ?? 0) + 1);
      return take(ev);
    };
    await view.start();
    await view.ready();
    await sleep(500);
    const others = Array.from({ length: agents - 1 }, (_, i) => `load-${String(i).padStart(4, '0')}`);
    const nodes = [obsNode, ...others];
    const s0 = nc.stats();
    let obsOk = 0;
    counting = true;
    const r = await allocateAtRate({
      nodes,
      rate,
      ms: windowMs,
      send: (node) =>
        node === obsNode
          ? rpc.call('requestAddress', { node, poolId: obsPool.poolId, address: '', options: {}, requestId: randomUUID(), kind: 'endpoint' }, core.RequestAddressRes).then((x) => (obsOk++, x))
          : requesters.client(node, nodes.indexOf(node)).call('requestAddress', { node, poolId: loadPool.poolId, address: '', options: {}, requestId: randomUUID(), kind: 'endpoint' }, core.RequestAddressRes),
    });
    // Until the observer's view holds every address it was given (or 30 s). Its view follows only its chains, so its
    // seq need not reach the controller's head: the events it needs are its pool's.
    const mine = () => [...(view.state.pools.get(obsPool.poolId)?.allocs.values() ?? [])].filter((a) => a.node === obsNode && a.kind === 'endpoint').length;
    const deadline = Date.now() + 30_000;
    while (mine() < obsOk && Date.now() < deadline) await sleep(20);
    await sleep(200);
    counting = false;
    const s1 = nc.stats();
    await view.stop();
    return { agents, ...r, caughtUp: mine() >= obsOk, inMsgs: s1.inMsgs - s0.inMsgs, inBytes: s1.inBytes - s0.inBytes, events: Object.fromEntries(byType) };
  } finally {
    await nc.close().catch(() => undefined);
  }
}


/**
 * Route convergence: one endpoint at a time, time until the simulated processes say every other agent has the route
 * (each process: how many of its agents added it, `n`, the first and the last time).
 */
async function routeConvergence({ core, nc, requesters, poolId, agents, count, label }) {
  const acks = new Map();
  let wake = () => {};
  const sub = nc.subscribe(SIM.seen);
  (async () => {
    for await (const m of sub) {
      const o = sc.decode(m.data);
      const a = acks.get(o.dst) ?? { n: 0, first: Infinity, last: 0 };
      acks.set(o.dst, { n: a.n + o.n, first: Math.min(a.first, o.first), last: Math.max(a.last, o.last) });
      wake();
    }
  })();
  const complete = (dst) => (acks.get(dst)?.n ?? 0) >= agents - 1;
  await nc.flush();
  const nodes = Array.from({ length: agents }, (_, i) => `sim${String(i).padStart(3, '0')}`);
  const out = [];
  let missing = 0;
  for (let i = 0; i < count; i++) {
    const node = nodes[(i * 7919) % nodes.length];
    const ts = now();
    const res = await requesters.client(node, i).call('requestAddress', { node, poolId, address: '', options: {}, requestId: randomUUID(), kind: 'endpoint' }, core.RequestAddressRes);
    const answered = now();
    const dst = `${res.address.split('/')[0]}/32`;
    const deadline = Date.now() + 30_000;
    while (!complete(dst) && Date.now() < deadline) await Promise.race([new Promise((r) => (wake = r)), sleep(50)]);
    const a = acks.get(dst);
    if (!complete(dst)) {
      missing++;
      progress(`${label}: ${dst} on ${node}: not on every agent within 30 s`);
      continue;
    }
    // firstMs: until the first agent added the route; answerMs: until the controller answered the request.
    out.push({ dst, ms: a.last - ts, replyMs: a.first - ts, answerMs: answered - ts });
  }
  sub.unsubscribe();
  return { samples: out, missing };
}

// ---- the controller's side: state at 100k / 1M allocations -----------------------------------------------

/**
 * Builds allocations with the controller's own decisions and fold (core's ClusterEngine: decide, stamp, apply), as a
 * leader would after that many RequestAddress calls from `nodes` nodes; `more(n)` adds until n allocations.
 */
function allocationBuilder(core, nodes) {
  const engine = new core.ClusterEngine();
  const ctx = { actor: 'node:bench' };
  // /22 blocks (1,022 usable addresses each), so 1,000 nodes × 1,000 addresses need about one block per node.
  const pool = engine.execute((s) => core.decideRequestPool(s, { node: 'seed-0000', space: 'underlay', pool: '10.0.0.0/8', subPool: '', options: { block_size: '22' }, v6: false, requestId: 'seed-pool' }), ctx).result;
  let made = 0;
  return {
    get state() {
      return engine.state;
    },
    more(n) {
      for (; made < n; made++) {
        const node = `seed-${String(made % nodes).padStart(4, '0')}`;
        engine.execute((s) => core.decideRequestAddress(s, { node, poolId: pool.poolId, address: '', options: {}, requestId: `r${made}`, kind: 'endpoint' }), ctx);
      }
    },
  };
}

/** Writes `state` as the latest snapshot with the controller's snapshot code, and the log head at its seq. */
async function writeSnapshot(adapters, core, etcdUrl, state) {
  const log = new adapters.EtcdEventLog({ endpoints: [etcdUrl], timeoutMs: 60_000 });
  try {
    const parts = [];
    const sections = [];
    for (const p of core.snapshotJsonParts(state, undefined, sections)) parts.push(p);
    const json = parts.join('');
    const snaps = new adapters.EtcdSnapshots(log);
    if (!(await snaps.write(state.seq, json, { sections }))) throw new Error(`snapshot at seq ${state.seq} not written: a newer one exists`);
    await log.client.put(adapters.keys.head).value(JSON.stringify({ seq: state.seq }));
    return json.length;
  } finally {
    log.client.close();
  }
}

/**
 * An agent's view starting from the snapshot (`V.ClusterView` on its own NATS connection, until ready): `pools`
 * given, by interest (the head and those pools' allocations); absent, the whole snapshot (as a view without
 * interest-based delivery, or with a snapshot that has no index, reads it).
 */
async function viewStart({ adapters, V, natsUrl, node, pools }) {
  const nc = await adapters.connectNats(natsUrl, `bench-scale-${node}`);
  const view = new V.ClusterView({ nc, rpc: new adapters.RpcClient(nc, node), logger: () => {}, ...(pools ? { pools: () => pools } : {}) });
  const s = now();
  try {
    await view.start();
    await view.ready();
    return { ms: now() - s, chars: view.snapshotCharsRead, snapshotSeq: view.snapshotSeq };
  } finally {
    await view.stop();
    await nc.close().catch(() => undefined);
  }
}

async function controllerAt({ adapters, core, V, dir, servers, builder, allocations, label, usageRuns }) {
  await step(`build ${label} allocations (ClusterEngine: decide + fold)`, async () => builder.more(allocations));
  const seq = builder.state.seq;
  const bytes = await step(`write the ${label} snapshot to etcd (snapshotJsonParts + EtcdSnapshots.write)`, () => writeSnapshot(adapters, core, servers.etcd.url, builder.state));
  progress(`snapshot at seq ${seq}: ${(bytes / 1e6).toFixed(1)} MB of JSON`);
  const ctl = await step(`controller cold start at ${label} (spawn → leader at seq ${seq})`, () => startController({ dir, etcdUrl: servers.etcd.url, natsUrl: servers.nats.url, name: `ctl-${label}`, seq }));
  try {
    const loaded = /state loaded: snapshot at seq (\d+), then (\d+) events folded \(seq \d+\) in (\d+) ms/.exec(fs.readFileSync(ctl.logFile, 'utf8'));
    const usage = [];
    await step(`GET /v1/ipam/usage ×${usageRuns} at ${label} (every page, as \`underlay ipam usage\` reads it)`, async () => {
      for (let i = 0; i < usageRuns; i++) {
        const s = now();
        let token;
        let pages = 0;
        let blocks = 0;
        let bytes = 0;
        let first;
        do {
          const q = `limit=${USAGE_PAGE}${token ? `&continue=${encodeURIComponent(token)}` : ''}`;
          const r = await httpGet(ctl.port, `/v1/ipam/usage?${q}`, 30_000);
          if (r.status !== 200) throw new Error(`GET /v1/ipam/usage: ${r.status} ${r.body.slice(0, 200)}`);
          const body = JSON.parse(r.body);
          first ??= body;
          pages++;
          bytes += r.body.length;
          blocks += (body.pools ?? []).reduce((n, p) => n + (p.blocks?.length ?? 0), 0);
          token = body.continue;
        } while (token && pages < 1_000);
        usage.push(now() - s);
        if (i === 0) {
          const allocated = (first.pools ?? []).reduce((n, p) => n + (p.used ?? 0), 0);
          progress(`usage at ${label}: ${first.pools?.length} pool(s), ${allocated} addresses used, ${blocks} blocks in ${pages} page(s), ${(bytes / 1e3).toFixed(0)} kB`);
        }
      }
    });
    await sleep(1_000);
    const mem = memoryMb(ctl.child.pid);
    // A controller that loses its lease while it starts (its thread blocked past the 2 s TTL) says so in its log.
    const lost = (fs.readFileSync(ctl.logFile, 'utf8').match(/lost leadership of/g) ?? []).length;
    if (lost) progress(`controller at ${label}: lost its leadership ${lost} time(s) (see ${ctl.logFile})`);
    // After the RSS (as measured before agents read snapshots): agents' views start from the snapshot.
    const views = {};
    views.uninvolved = await step(`an uninvolved agent's view starts at ${label} (the snapshot's head only)`, () => viewStart({ adapters, V, natsUrl: servers.nats.url, node: 'bench-view-a', pools: [] }));
    views.whole = await step(`a view reading the whole snapshot starts at ${label}`, () => viewStart({ adapters, V, natsUrl: servers.nats.url, node: 'bench-view-b' }));
    for (const [k, v] of Object.entries(views)) if (v.snapshotSeq !== seq) throw new Error(`the ${k} view started from snapshot ${v.snapshotSeq}, not ${seq}`);
    progress(`views at ${label}: uninvolved ${(views.uninvolved.chars / 1e3).toFixed(0)} kB read in ${f1(views.uninvolved.ms)} ms; whole ${(views.whole.chars / 1e6).toFixed(1)} MB in ${f1(views.whole.ms)} ms`);
    return { label, seq, snapshotBytes: bytes, coldStartMs: ctl.readyMs, loadMs: loaded ? Number(loaded[3]) : NaN, usage: stats(usage), lost, views, ...mem };
  } finally {
    await stopChild(ctl.child);
  }
}

// ---- main --------------------------------------------------------------------------------------------

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const { adapters, core, view: V } = loadProduct('bench:scale');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'underlay-bench-scale-'));
  state.dir = dir;
  progress(`${o.agents} agents (small: ${o.smallAgents}), ${o.rate}/s per agent for ${o.windowMs} ms, ${o.endpoints} endpoints, ${o.allocationsSmall} and ${o.allocations} allocations; logs in ${dir}`);
  const result = { route: undefined, small: undefined, big: undefined, mem: [], restart: undefined, machine: machineSpeed() };

  if (!o.skip.includes('routes') || !o.skip.includes('ratio')) {
    const servers = await step('start etcd and nats-server', () => startServers('plain', dir));
    const ctl = await step('start the controller', () => startController({ dir, etcdUrl: servers.etcd.url, natsUrl: servers.nats.url, name: 'ctl-cluster' }));
    const nc = await adapters.connectNats(servers.nats.url, 'bench-scale-driver');
    const requesters = await makeRequesters(adapters, servers.nats.url, 8);
    try {
      const common = { adapters, core, V, natsUrl: servers.nats.url, ctlPort: ctl.port, rate: o.rate, windowMs: o.windowMs, requesters };
      if (!o.skip.includes('ratio')) {
        result.small = await step(`messages to an uninvolved agent at ${o.smallAgents} agents`, () => uninvolvedAgent({ ...common, agents: o.smallAgents, label: 'small' }));
      }
      if (!o.skip.includes('routes')) {
        const pool = await requesters.client('sim000', 0).call('requestPool', { node: 'sim000', space: 'underlay', pool: SIM.pool, subPool: '', options: { block_size: '32' }, v6: false, requestId: randomUUID() }, core.RequestPoolRes);
        const shards = simShards(o.agents);
        const ready = collect(nc, SIM.ready, shards.length, 600_000);
        await nc.flush();
        // Diagnostics only (e.g. `--cpu-prof --cpu-prof-dir=DIR`): extra node flags for the simulated agents' processes.
        const simFlags = (process.env.BENCH_SCALE_SIM_NODE_FLAGS ?? '').split(' ').filter(Boolean);
        const sims = shards.map(([from, count], k) =>
          spawnLogged([...simFlags, path.join(__dirname, 'routes.js'), '--sim', String(count), servers.nats.url, pool.poolId, String(from)], path.join(dir, `sim-agents-${k}.log`)),
        );
        try {
          const exited = sims.map((sim, k) => new Promise((_, rej) => sim.once('exit', (c) => rej(new Error(`simulated agents' process ${k} exited (${c}); log ${dir}/sim-agents-${k}.log`)))));
          await step(`start ${o.agents} simulated agents in ${shards.length} process(es) (ClusterView + RouteService each, own connection)`, () => Promise.race([ready, ...exited]));
          const c = { core, nc, requesters, poolId: pool.poolId, agents: o.agents };
          await step(`route convergence: ${o.warmup} warm-up endpoints`, () => routeConvergence({ ...c, count: o.warmup, label: 'warm-up' }));
          result.route = await step(`route convergence: ${o.endpoints} endpoints`, () => routeConvergence({ ...c, count: o.endpoints, label: 'route' }));
          const rs = stats(result.route.samples.map((x) => x.ms));
          progress(`route convergence at ${o.agents} agents: p50 ${f1(rs.p50)} ms, p99 ${f1(rs.p99)} ms, ${result.route.missing} missing`);
        } finally {
          await step('stop the simulated agents', () => Promise.all(sims.map((sim) => stopChild(sim, 60_000))));
        }
      }
      if (!o.skip.includes('ratio')) {
        result.big = await step(`messages to an uninvolved agent at ${o.agents} agents`, () => uninvolvedAgent({ ...common, agents: o.agents, label: 'big' }));
        progress(`uninvolved agent: ${result.small?.inMsgs} messages at ${o.smallAgents} agents, ${result.big.inMsgs} at ${o.agents}`);
      }
    } finally {
      await requesters.close();
      await nc.close().catch(() => undefined);
      await stopChild(ctl.child);
      await stopAll();
    }
  }

  if (!o.skip.includes('restart')) {
    const servers = await step('start etcd and nats-server for the agent restart', () => startServers('plain', path.join(dir, 'restart')));
    const ctl = await step('start the controller', () => startController({ dir, etcdUrl: servers.etcd.url, natsUrl: servers.nats.url, name: 'ctl-restart' }));
    try {
      result.restart = await step(`agent restart with ${o.agentEndpoints} endpoints ×${o.restarts}`, () =>
        agentRestart({ dir: path.join(dir, 'restart'), natsUrl: servers.nats.url, endpoints: o.agentEndpoints, runs: o.restarts, progress, spawnLogged, stopChild }),
      );
      progress(`agent restart with ${result.restart.restoredEndpoints} endpoints: median ${f1(stats(result.restart.times).p50)} ms`);
    } catch (e) {
      progress(`agent restart failed: ${e.message}`);
      result.restart = { failed: e.message, times: [], restoredEndpoints: NaN };
    } finally {
      await stopChild(ctl.child);
      await stopAll();
    }
  }

  if (!o.skip.includes('memory')) {
    const servers = await step('start a fresh etcd and nats-server', () => startServers('plain', path.join(dir, 'memory')));
    try {
      const builder = allocationBuilder(core, 1000);
      const common = { adapters, core, V, dir, servers, builder, usageRuns: 5 };
      for (const n of [o.allocationsSmall, o.allocations]) {
        // A controller that fails at one size is reported as such; the figures measured so far are still printed.
        try {
          const m = await controllerAt({ ...common, allocations: n, label: kLabel(n) });
          result.mem.push(m);
          progress(`controller at ${m.label}: cold start ${f1(m.coldStartMs)} ms (state load ${f1(m.loadMs)} ms), RSS ${f1(m.rss)} MB, usage p50 ${f1(m.usage.p50)} ms`);
        } catch (e) {
          progress(`controller at ${kLabel(n)} failed: ${e.message}`);
          result.mem.push({ label: kLabel(n), failed: e.message, lost: undefined, snapshotBytes: NaN, coldStartMs: NaN, loadMs: NaN, rss: NaN, hwm: NaN, usage: stats([]), views: undefined });
        }
      }
    } finally {
      await stopAll();
    }
  }

  report(o, result);
  if (process.env.BENCH_SCALE_KEEP !== '1') fs.rmSync(dir, { recursive: true, force: true });
}

const kLabel = (n) => (n >= 1e6 && n % 1e6 === 0 ? `${n / 1e6}M` : n >= 1e3 && n % 1e3 === 0 ? `${n / 1e3}k` : String(n));

function report(o, r) {
  console.log('steps (wall time):');
  console.log(table(['step', 's'], steps.map(([n, ms]) => [n, (ms / 1000).toFixed(1)])));
  let routeP99 = NaN;
  if (r.route) {
    const s = stats(r.route.samples.map((x) => x.ms));
    const first = stats(r.route.samples.map((x) => x.replyMs));
    routeP99 = s.p99;
    console.log(`route convergence, ${o.agents} simulated agents (RequestAddress sent → route on every other agent's in-memory table):`);
    console.log(table(['endpoints', 'missing', 'first agent p50/p99', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'target p99'], [[String(s.n), String(r.route.missing), `${f1(first.p50)}/${f1(first.p99)}`, f1(s.p50), f1(s.p90), f1(s.p99), f1(s.max), `${TARGET.routeP99Ms} ms`]]));
    // Where the slowest ones lost their time: before the controller answered, before the first agent had the route, or
    // in the spread from the first agent to the last.
    for (const x of [...r.route.samples].sort((a, b) => b.ms - a.ms).slice(0, 3)) {
      console.log(`  slowest: ${x.dst} ${f1(x.ms)} ms: controller answered ${f1(x.answerMs)}, first agent ${f1(x.replyMs)}, spread to the last ${f1(x.ms - x.replyMs)}`);
    }
  }
  let ratio = NaN;
  if (r.small && r.big) {
    ratio = r.big.inMsgs / r.small.inMsgs;
    console.log(`messages one uninvolved agent received while every agent allocated ${o.rate}/s for ${o.windowMs} ms (its own allocations in a pool of its own):`);
    const row = (x) => [String(x.agents), String(x.sent), String(x.failed), String(x.inMsgs), (x.inBytes / 1e3).toFixed(0), Object.entries(x.events).map(([k, v]) => `${k} ${v}`).join(', ') || 'none', x.caughtUp ? 'yes' : 'NO'];
    console.log(table(['agents', 'allocations', 'refused', 'messages in', 'kB in', 'events folded', 'caught up'], [row(r.small), row(r.big)]));
    console.log(`ratio ${r.big.agents}/${r.small.agents} agents: ${ratio.toFixed(2)} (target ≤ ${TARGET.ratio}); with delivery by interest an agent follows only its own pools' chains, the cluster's and its host's`);
  }
  if (r.mem.length) {
    console.log('controller from a snapshot (real process; allocations decided and folded by core\'s ClusterEngine, written with the controller\'s snapshot code):');
    console.log(
      table(
        ['allocations', 'snapshot MB', 'cold start ms', 'state load ms', 'leadership lost', 'RSS MB', 'peak RSS MB', 'usage p50 ms', 'usage max ms'],
        r.mem.map((m) => [m.label, (m.snapshotBytes / 1e6).toFixed(1), f1(m.coldStartMs), f1(m.loadMs), m.lost === undefined ? 'n/a' : String(m.lost), f1(m.rss), f1(m.hwm), f1(m.usage.p50), f1(m.usage.max)]),
      ),
    );
    console.log("an agent's view starting from that snapshot (ClusterView until ready): by interest, an agent with no part in the pool reads the head only; without, the whole text:");
    const v = (x, unit) => (x ? `${unit === 'MB' ? (x.chars / 1e6).toFixed(1) : (x.chars / 1e3).toFixed(0)} ${unit} in ${f1(x.ms)} ms` : 'n/a');
    console.log(table(['allocations', 'uninvolved agent (head only)', 'whole snapshot'], r.mem.map((m) => [m.label, v(m.views?.uninvolved, 'kB'), v(m.views?.whole, 'MB')])));
  }
  let restartMs = NaN;
  if (r.restart) {
    const s = stats(r.restart.times);
    restartMs = s.p50;
    console.log(`agent restart (real agent process in its own network namespace, ${o.agentEndpoints} endpoints in its state files and in Docker (a stand-in); spawn until the plugin socket served EndpointOperInfo):`);
    console.log(table(['endpoints restored', 'restarts', 'p50 ms', 'max ms', 'target'], [[String(r.restart.restoredEndpoints), String(s.n), f1(s.p50), f1(s.max), `${TARGET.restartMs} ms`]]));
    if (r.restart.failed) console.log(`agent restart failed: ${r.restart.failed}`);
  }
  const small = r.mem[0];
  const big = r.mem[1];
  const missed = [];
  const check = (name, v, t) => {
    if (!(v <= t)) missed.push(`${name} ${Number.isFinite(v) ? f1(v) : 'not measured'} > ${t}`);
  };
  check('route p99 ms', routeP99, TARGET.routeP99Ms);
  check('msgs_per_agent_ratio', ratio, TARGET.ratio);
  check(`controller RSS MB at ${small?.label ?? '100k'}`, small?.rss, TARGET.rss100kMb);
  check(`controller RSS MB at ${big?.label ?? '1M'}`, big?.rss, TARGET.rss1mMb);
  check(`cold start ms at ${big?.label ?? '1M'}`, big?.coldStartMs, TARGET.coldStartMs);
  check('agent restart ms', restartMs, TARGET.restartMs);
  check(`ipam usage ms at ${small?.label ?? '100k'}`, small?.usage.p50, TARGET.usageMs);
  console.log(`(${r.machine.line})`);
  console.log(missed.length ? `target missed: ${missed.join(', ')}` : 'target met: all figures');
  const int = (x) => (Number.isFinite(x) ? String(Math.round(x)) : 'NaN');
  console.log(
    `scale sim_agents=${o.agents} route_p99_ms=${int(routeP99)} msgs_per_agent_ratio=${Number.isFinite(ratio) ? ratio.toFixed(2) : 'NaN'} ctl_rss_mb_100k=${int(small?.rss)} ctl_rss_mb_1m=${int(big?.rss)} cold_start_1m_ms=${int(big?.coldStartMs)} agent_restart_1k_ms=${int(restartMs)} usage_100k_ms=${int(small?.usage.p50)}`,
  );
}

const state = { dir: undefined };

function killChildrenSync() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
  killAllSync();
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    progress(`${sig}: stopping everything`);
    killChildrenSync();
    process.exit(130);
  });
}
process.on('exit', killChildrenSync);
main().then(
  () => process.exit(0),
  async (err) => {
    console.error(`bench:scale failed: ${err && err.stack ? err.stack : err}`);
    killChildrenSync();
    await stopAll().catch(() => undefined);
    process.exit(1);
  },
);
