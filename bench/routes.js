#!/usr/bin/env node
'use strict';
/**
 * `npm run bench:routes` (issue 6): route convergence — an endpoint starts on one host; how long until the
 * route to it is in the kernel of EVERY other host.
 *
 * Part 1, 20 real hosts: the e2e lab (test/lab, loaded through bench/lib/docker-run-ts.js) with 20 network
 * namespaces on one bridge (eth1 = 198.51.100.n/24, a veth), etcd and NATS on the bridge, the controller in
 * this process. In each namespace runs the agent's route path — ClusterView (the JetStream event stream and
 * fold) + RouteService (services/node-agent/src/routes) on real rtnetlink — for one ipvlan-l3-like network
 * whose parent is eth1 (the host kernel has no ipvlan, so the parent is the veth; the routes are the same
 * routes, `<block> via <owner> dev eth1 proto 201`). The IPAM is driven through the controller exactly as an
 * agent's RequestAddress does, with `--ipam-opt block_size=32`, so every endpoint claims its own block and
 * produces one route on each of the 19 other hosts. An endpoint's convergence time runs from just before its
 * RequestAddress is sent to the LAST of the 19 kernels acknowledging the route (RTM_NEWROUTE ACK: the route
 * is in the table). 100 endpoints, one at a time, on hosts round robin; p50/p99. Afterwards every host's
 * `ip route show proto 201` is checked against what it should hold. Each host also reports when its view
 * applied the BlockClaimed, when the view's listeners ran and when the RouteService asked rtnetlink, so the
 * report splits the time of the host that was last into stages (observation only: the path is unchanged).
 *
 * Part 2, 200 simulated agents: the same path (200 ClusterViews, each with its own NATS connection and
 * JetStream consumer, 200 RouteServices) in separate processes, one per CPU (bench/lib/sim-shards.js;
 * BENCH_SIM_PROCESSES=1: one process), whose routes go to an IN-MEMORY table
 * (MemoryRouteOps), not a kernel; IPAM-only data in 198.18.0.0/15. 100 endpoints; time to the last of the
 * 199 other agents.
 *
 * Last line of stdout, exactly:
 *   routes hosts=20 p50_ms=<n> p99_ms=<n> sim_agents=200 sim_p99_ms=<n>
 * Targets: p99 ≤ 50 ms (real hosts), ≤ 200 ms (simulated). Exit 0 even when a target is missed (the line
 * before the last says so); 1 when the benchmark could not run. Takes the machine-wide lab lock (waits for a
 * running e2e suite) and destroys the lab (namespaces, processes, etcd, NATS) at the end, on error and on
 * Ctrl-C. Needs root, iproute2, etcd, nats-server and a build (`npx tsc -b`). Progress goes to stderr.
 *
 * Environment knobs:
 *   BENCH_ROUTES_HOSTS       real hosts (20)
 *   BENCH_ROUTES_N           measured endpoints per part (100)
 *   BENCH_ROUTES_WARMUP      warm-up endpoints per part (10)
 *   BENCH_ROUTES_SIM_AGENTS  simulated agents (200)
 *   BENCH_SIM_PROCESSES      processes the simulated agents are spread over (one per CPU)
 *   BENCH_ROUTES_SIM_PROF=DIR  CPU profile of the simulated agents' processes (node --cpu-prof) into DIR
 *   BENCH_ROUTES_SIM_HEAP=FILE  allocations of the simulated agents from when they are ready to the end (V8 sampling heap
 *                            profile, collected objects included) into FILE (the first process; the others into
 *                            FILE with `.<first agent>` before its extension)
 *   UNDERLAY_LAB_KEEP=1      keep the lab directory (harness logs in <lab dir>/logs/)
 * Diagnostics (off by default; each costs some CPU, so compare like with like):
 *   BENCH_ROUTES_TRACE=1     each real host also reports its scheduler figures (/proc/self/schedstat) and GC
 *                            time per route; the stage table gains CPU, runnable-wait and GC columns
 *   BENCH_ROUTES_CPU=1       per endpoint, CPU and runnable-wait of every thread of the driver, the agents,
 *                            nats-server and etcd, and the machine's busy/idle/steal (read between endpoints)
 *   BENCH_ROUTES_AGENT_PROF=DIR  CPU profile (node --cpu-prof) of one real host's harness (h02) into DIR
 *   BENCH_ROUTES_AGENT_NODE_FLAGS='…'  extra node flags for every real host's harness (e.g. --trace-gc, --trace-opt;
 *                            experiments only: the product does not run with them)
 *   BENCH_ROUTES_DUMP=FILE   every sample (per host timestamps included) as JSON
 *
 * Internal modes (started by the bench itself): `--agent NODE NATS ADDRESS POOL` (one host's route path, run
 * inside its namespace) and `--sim COUNT NATS POOL [FROM]` (simulated agents FROM..FROM+COUNT-1).
 */
const path = require('node:path');
const fs = require('node:fs');
const { performance, PerformanceObserver, constants } = require('node:perf_hooks');
const { randomUUID } = require('node:crypto');

const ROOT = path.resolve(__dirname, '..');
const TARGET = { p99Ms: 50, simP99Ms: 200 };
const SUBJ = { ready: 'bench.routes.ready', seen: 'bench.routes.seen', simReady: 'bench.routes.sim.ready', simSeen: 'bench.routes.sim.seen' };
const REAL_POOL = '192.0.2.0/24';
const SIM_POOL = '198.18.0.0/16';

const envInt = (name, dflt, min = 1) => {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v >= min ? v : dflt;
};
const HOSTS = Math.min(envInt('BENCH_ROUTES_HOSTS', 20, 2), 200);
const N = envInt('BENCH_ROUTES_N', 100);
const WARMUP = envInt('BENCH_ROUTES_WARMUP', 10, 0);
const SIM_AGENTS = envInt('BENCH_ROUTES_SIM_AGENTS', 200, 2);

/** Wall-clock milliseconds with sub-ms resolution, comparable across processes on this machine. */
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));


const sc = { encode: (o) => Buffer.from(JSON.stringify(o)), decode: (b) => JSON.parse(Buffer.from(b).toString()) };

// ---- mode --agent: one real host's route path, inside its namespace -------------------------------

async function agentMode([node, natsUrl, address, poolId]) {
  const { adapters, core, view: V, routes: R } = loadProduct('bench:routes');
  const log = (m) => process.stdout.write(`[${new Date().toISOString()}] ${node}: ${m}\n`);
  const nc = await adapters.connectNats(natsUrl, `bench-routes-${node}`);
  const rpc = new adapters.RpcClient(nc, node);
  await rpc.call('nodeReport', { node, address, version: 'bench', endpoints: [] }, core.EmptyRes);
  // As the agent: delivery by interest (the cluster chain, its host's, its network's pool).
  const view = new V.ClusterView({ nc, rpc, logger: log, pools: () => [poolId] });
  const real = adapters.openRouteOps();
  // Per-stage timestamps of each foreign block on this host (observation only; the path is unchanged):
  // take = the view applied the BlockClaimed (the consumer delivered it), view = the view's listeners ran,
  // add = the RouteService asked rtnetlink, t = the kernel acknowledged.
  const trace = new Map(); // dst → { tTake, tView, tAdd, … }
  // BENCH_ROUTES_TRACE=1: also this process's scheduler figures (/proc/self/schedstat: on CPU, runnable but
  // waiting) and GC time (perf_hooks) over the same interval and since the previous route (a file read per
  // stage: off by default, it costs the agents CPU).
  const deep = process.env.BENCH_ROUTES_TRACE === '1';
  const sched = () => {
    try {
      const [run, wait] = fs.readFileSync('/proc/self/schedstat', 'utf8').split(' ').map(Number);
      return { run: run / 1e6, wait: wait / 1e6 };
    } catch {
      return { run: 0, wait: 0 };
    }
  };
  let gcMs = 0;
  let gcMajor = 0;
  if (deep) {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        gcMs += e.duration;
        if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcMajor++;
      }
    }).observe({ entryTypes: ['gc'] });
  }
  let idle = deep ? { s: sched(), gc: 0 } : undefined;
  const take = view.take.bind(view);
  view.take = (ev) => {
    if (ev.type === 'BlockClaimed' && ev.data.node !== node && !trace.has(ev.data.block)) {
      const x = { tTake: now() };
      if (deep) Object.assign(x, { s0: sched(), gc0: gcMs, gcMajor0: gcMajor, gcBeforeMs: gcMs - idle.gc });
      if (deep) x.wakeWaitMs = x.s0.wait - idle.s.wait;
      trace.set(ev.data.block, x);
    }
    return take(ev);
  };
  // The real ops, with the moment the kernel acknowledged each new route reported to the bench.
  const ops = {
    listRoutes: (f) => real.listRoutes(f),
    replaceRoute: (r) => real.replaceRoute(r),
    deleteRoute: (r) => real.deleteRoute(r),
    close: () => real.close(),
    addRoute: async (r) => {
      const x = trace.get(r.dst);
      if (x) x.tAdd = now();
      await real.addRoute(r);
      const t = now();
      const st = x ? { tTake: x.tTake, tView: x.tView, tAdd: x.tAdd } : {};
      if (x && deep) {
        const s1 = sched();
        Object.assign(st, { runMs: s1.run - x.s0.run, waitMs: s1.wait - x.s0.wait, wakeWaitMs: x.wakeWaitMs, gcMs: gcMs - x.gc0, gcMajor: gcMajor - x.gcMajor0, gcBeforeMs: x.gcBeforeMs });
        idle = { s: s1, gc: gcMs };
      }
      trace.delete(r.dst);
      nc.publish(SUBJ.seen, sc.encode({ node, dst: r.dst, via: r.via, t, ...st }));
    },
  };
  const net = { id: 'bench', type: 'ipvlan', ipvlanMode: 'l3', parent: 'eth1', poolIds: [poolId] };
  // When this host's view got each block claim (the earliest over all hosts ≈ when the event was published).
  view.onChange((evs) => {
    const t = now();
    for (const e of evs) {
      if (e.type !== 'BlockClaimed' || e.data.node === node) continue;
      const x = trace.get(e.data.block);
      if (x) x.tView = t;
    }
  });
  await view.start();
  const svc = await R.startRoutes({ node, view, localNetworks: () => [net], reconcileMs: 10_000, logger: log, ops });
  await view.ready();
  nc.publish(SUBJ.ready, sc.encode({ node, pid: process.pid }));
  log(`ready at seq ${view.seq}`);
  const stop = async () => {
    log(`stopping: ${JSON.stringify(svc.stats())}`);
    await svc.stop();
    await view.stop();
    await nc.drain().catch(() => undefined);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// ---- mode --sim: COUNT simulated agents in this process (one of simShards), in-memory route tables --------

async function simMode([countText, natsUrl, poolId, fromText = '0']) {
  const { adapters, core, view: V, routes: R } = loadProduct('bench:routes');
  // This process runs agents from..from+count-1 of all of them (simShards: one process per CPU).
  const count = Number(countText);
  const from = Number(fromText);
  const log = (m) => process.stdout.write(`[${new Date().toISOString()}] sim: ${m}\n`);
  const control = await adapters.connectNats(natsUrl, 'bench-routes-sim');
  /** dst → { first, last, count } over all agents. */
  const seen = new Map();
  /** dst → when the first agent's view got its BlockClaimed. */
  const firstEvent = new Map();
  /** dst → the node whose block it is (no route to it on that node). */
  const ownerOf = new Map();
  const mine = new Set();
  const agents = [];
  const addressOf = (i) => `198.19.${i >> 8}.${i & 0xff}`;
  for (let i = from; i < from + count; i++) {
    const node = `sim${String(i).padStart(3, '0')}`;
    mine.add(node);
    const nc = await adapters.connectNats(natsUrl, `bench-routes-${node}`);
    const rpc = new adapters.RpcClient(nc, node);
    await rpc.call('nodeReport', { node, address: addressOf(i + 1), version: 'bench', endpoints: [] }, core.EmptyRes);
    const view = new V.ClusterView({ nc, rpc, logger: (m) => log(`${node}: ${m}`), pools: () => [poolId] });
    const ops = new R.MemoryRouteOps();
    ops.onChange = (kind, r) => {
      if (kind !== 'add') return;
      const t = now();
      const s = seen.get(r.dst) ?? { first: t, last: t, count: 0 };
      s.last = t;
      s.count++;
      seen.set(r.dst, s);
      // Every agent of this process but the block's own (when it is here) adds the route: `n` of them.
      const n = count - (mine.has(ownerOf.get(r.dst)) ? 1 : 0);
      if (s.count === n) control.publish(SUBJ.simSeen, sc.encode({ dst: r.dst, first: s.first, last: s.last, event: firstEvent.get(r.dst), n }));
    };
    const net = { id: 'bench', type: 'ipvlan', ipvlanMode: 'l3', parent: 'eth1', poolIds: [poolId] };
    view.onChange((evs) => {
      const t = now();
      for (const e of evs) {
        if (e.type !== 'BlockClaimed' || firstEvent.has(e.data.block)) continue;
        firstEvent.set(e.data.block, t);
        ownerOf.set(e.data.block, e.data.node);
      }
    });
    await view.start();
    const svc = await R.startRoutes({ node, view, localNetworks: () => [net], reconcileMs: 10_000, logger: () => {}, ops });
    agents.push({ node, nc, view, svc });
  }
  await Promise.all(agents.map((a) => a.view.ready()));
  // Diagnostics: what the simulated agents allocate from now on, collected objects included (V8's sampling heap
  // profiler; open the file in Chrome DevTools' Memory tab, or sum it by function).
  // The first process writes FILE; the others FILE with `.<first agent>` before its extension (DevTools opens *.heapprofile).
  const heapFile = process.env.BENCH_ROUTES_SIM_HEAP && (from === 0 ? process.env.BENCH_ROUTES_SIM_HEAP : process.env.BENCH_ROUTES_SIM_HEAP.replace(/(\.[^./]*)?$/, (ext) => `.${from}${ext}`));
  let heapSession;
  if (heapFile) {
    heapSession = new (require('node:inspector').Session)();
    heapSession.connect();
    heapSession.post('HeapProfiler.startSampling', { samplingInterval: 65536, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  }
  control.publish(SUBJ.simReady, sc.encode({ count, pid: process.pid }));
  log(`${count} simulated agents ready`);
  const stop = async () => {
    if (heapSession) {
      await new Promise((res) =>
        heapSession.post('HeapProfiler.stopSampling', (err, r) => {
          if (err) log(`heap profile: ${err.message}`);
          else fs.writeFileSync(heapFile, JSON.stringify(r.profile));
          res();
        }),
      );
    }
    for (const a of agents) {
      await a.svc.stop();
      await a.view.stop();
      await a.nc.close().catch(() => undefined);
    }
    await control.close().catch(() => undefined);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// ---- main ------------------------------------------------------------------------------------------

const t0 = performance.now();
const progress = (msg) => process.stderr.write(`bench:routes: [${((performance.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);

const { stats, f1, table } = require('./lib/stats.js');
const { collect } = require('./lib/collect.js');
const { loadProduct } = require('./lib/product.js');
const { machineSpeed } = require('./lib/machine.js');
const { simShards } = require('./lib/sim-shards.js');

const state = { lab: undefined, pendingLab: undefined, controller: undefined, nc: undefined, destroying: undefined };

function destroyAll() {
  state.destroying ??= (async () => {
    try {
      await state.nc?.close();
    } catch {}
    try {
      await state.controller?.stop();
    } catch {}
    const lab = state.lab ?? (state.pendingLab ? await state.pendingLab.catch(() => undefined) : undefined);
    if (lab && !lab.isDestroyed()) {
      progress(`destroying lab ${lab.prefix} (namespaces, harness processes, etcd, NATS)${process.env.UNDERLAY_LAB_KEEP === '1' ? `; keeping ${lab.dir}` : ''}`);
      await lab.destroy();
    }
  })();
  return state.destroying;
}



/**
 * BENCH_ROUTES_CPU=1 (diagnostics): CPU per endpoint by process class, read between endpoints (never inside
 * the timed window): run and runnable-wait time of every thread (/proc/PID/task/TID/schedstat, ns) of the
 * driver (controller + bench), the agents, nats-server and etcd, and the machine's /proc/stat (steal, idle).
 */
function cpuSampler(classes) {
  const threads = (pid) => {
    let run = 0;
    let wait = 0;
    let tids = [];
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {}
    const byName = {};
    for (const tid of tids) {
      try {
        const [r, w] = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ').map(Number);
        run += r / 1e6;
        wait += w / 1e6;
        const name = tid === String(pid) ? 'main' : fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim().replace(/\W+/g, '_');
        byName[name] = (byName[name] ?? 0) + r / 1e6;
      } catch {}
    }
    return { run, wait, byName };
  };
  const machine = () => {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const tick = 10; // USER_HZ 100
    return { busy: (f[0] + f[1] + f[2] + f[5] + f[6]) * tick, idle: (f[3] + f[4]) * tick, steal: (f[7] ?? 0) * tick };
  };
  return () => {
    const out = { machine: machine() };
    for (const [name, pids] of Object.entries(classes)) {
      const acc = { run: 0, wait: 0 };
      for (const pid of pids) {
        const t = threads(pid);
        acc.run += t.run;
        acc.wait += t.wait;
        if (name === 'agents') for (const [n, v] of Object.entries(t.byName)) acc[`run_${n}`] = (acc[`run_${n}`] ?? 0) + v;
      }
      out[name] = acc;
    }
    return out;
  };
}
const cpuDelta = (a, b) => {
  const d = {};
  for (const k of Object.keys(b)) {
    d[k] = {};
    for (const f of Object.keys(b[k])) d[k][f] = b[k][f] - (a[k][f] ?? 0);
  }
  return d;
};

/**
 * One endpoint at a time: RequestAddress for a node (block_size 32: one new block, one new route elsewhere);
 * waits until `expect` other hosts acknowledged the route (or 5 s). Acknowledgements may arrive before the
 * reply does (events are published at commit), so they are counted per destination from the start.
 */
async function measureEndpoints({ rpc, core, poolId, nodes, count, expect, subject, aggregated, label, placed, cpu }) {
  const acks = new Map(); // dst → { got, last, event, hosts }
  let wake;
  const sub = state.nc.subscribe(subject);
  (async () => {
    for await (const m of sub) {
      const o = sc.decode(m.data);
      const a = acks.get(o.dst) ?? { got: 0, last: 0, hosts: [] };
      // Simulated agents: one message per process with how many of its agents added the route (simShards).
      a.got += aggregated ? o.n : 1;
      a.last = Math.max(a.last, aggregated ? o.last : o.t);
      if (aggregated && o.event) a.event = Math.min(a.event ?? Infinity, o.event);
      // Real hosts: the earliest view to get the block claim is when the event was published.
      if (!aggregated) {
        a.hosts.push(o);
        if (o.tView !== undefined) a.event = Math.min(a.event ?? Infinity, o.tView);
      }
      acks.set(o.dst, a);
      wake?.();
    }
  })();
  await state.nc.flush();
  const out = [];
  let missing = 0;
  for (let i = 0; i < count; i++) {
    const node = nodes[i % nodes.length];
    const cpu0 = cpu?.();
    const ts = now();
    // What an agent sends for Docker's RequestAddress of an endpoint (a request id, kind endpoint).
    const res = await rpc.call('requestAddress', { node, poolId, address: '', options: {}, requestId: randomUUID(), kind: 'endpoint' }, core.RequestAddressRes);
    const replied = now();
    const dst = `${res.address.split('/')[0]}/32`;
    placed?.push({ node, dst });
    const deadline = Date.now() + 5_000;
    while ((acks.get(dst)?.got ?? 0) < expect && Date.now() < deadline) {
      await Promise.race([new Promise((r) => (wake = r)), sleep(50)]);
    }
    const a = acks.get(dst);
    if (!a || a.got < expect) {
      missing++;
      progress(`${label}: ${dst} on ${node}: only ${a?.got ?? 0}/${expect} acknowledgements within 5 s`);
      continue;
    }
    const ev = a.event;
    const cpuUse = cpu0 ? cpuDelta(cpu0, cpu()) : undefined;
    out.push({ ...(cpuUse ? { cpu: cpuUse } : {}), node, dst, ts, ms: a.last - ts, replyMs: replied - ts, ...(ev ? { eventMs: ev - ts, fanoutMs: a.last - ev } : {}), ...(aggregated ? {} : { hosts: a.hosts }) });
  }
  sub.unsubscribe();
  return { samples: out, missing };
}

async function main() {
  require('./lib/docker-run-ts.js').install();
  const L = require('../test/lab');
  const { adapters, core } = loadProduct('bench:routes');
  const { Controller } = require('@underlay/controller');
  L.assertPrerequisites(['lab', 'etcd', 'nats']);
  if (process.getuid?.() !== 0) throw new Error('bench:routes needs root (network namespaces, routes)');

  progress('creating the lab (waits for the machine-wide lab lock if another lab is running)');
  state.pendingLab = L.createLab({ lockTimeoutMs: 600_000 });
  const lab = (state.lab = await state.pendingLab);
  // Measured once the lab lock is held (another lab's load would count otherwise).
  const machine = machineSpeed();
  const hosts = [];
  for (let i = 1; i <= HOSTS; i++) hosts.push(await lab.addHost(`h${String(i).padStart(2, '0')}`));
  progress(`lab ${lab.prefix} (${lab.dir}): ${hosts.length} hosts; starting etcd, NATS and the controller`);
  const etcd = await L.startLabEtcd(lab);
  const nats = await L.startLabNats(lab);
  const controller = new Controller(
    { etcd: [etcd.url], nats: nats.url, listen: '127.0.0.1:0', name: 'bench-routes', unboundGraceMs: 3_600_000, collectIntervalMs: 600_000 },
    (m) => /fail|error/i.test(m) && progress(`controller: ${m}`),
  );
  state.controller = controller;
  await controller.start();
  await controller.whenLeader();
  const nc = (state.nc = await adapters.connectNats(nats.url, 'bench-routes-driver'));
  // The driver speaks for each node it plays (a request goes on the subject of the node its body names).
  const clients = new Map();
  const rpc = {
    call(method, req, schema, o) {
      let c = clients.get(req.node);
      if (!c) clients.set(req.node, (c = new adapters.RpcClient(nc, req.node)));
      return c.call(method, req, schema, o);
    },
  };
  const pool = await rpc.call('requestPool', { node: hosts[0].name, space: 'underlay', pool: REAL_POOL, subPool: '', options: { block_size: '32' }, v6: false, requestId: randomUUID() }, core.RequestPoolRes);
  progress(`pool ${pool.poolId} (block_size=32); starting the route path (ClusterView + RouteService, rtnetlink) in each host`);

  const agentPids = [];
  const ready = collect(nc, SUBJ.ready, hosts.length, 120_000, (o) => agentPids.push(o.pid));
  await nc.flush(); // the subscription is registered before the first harness can answer
  const agentProf = (h) => (process.env.BENCH_ROUTES_AGENT_PROF && h === hosts[1] ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_ROUTES_AGENT_PROF}`] : []);
  const agentFlags = (process.env.BENCH_ROUTES_AGENT_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  for (const h of hosts) lab.spawnIn(h, process.execPath, [...agentFlags, ...agentProf(h), __filename, '--agent', h.name, nats.url, h.address, pool.poolId], { name: 'routes', cwd: ROOT });
  await ready;
  progress(`${hosts.length} hosts ready; ${WARMUP} warm-up endpoints, then ${N}`);
  const names = hosts.map((h) => h.name);
  const placed = [];
  const cpu = process.env.BENCH_ROUTES_CPU === '1' ? cpuSampler({ driver: [process.pid], agents: agentPids, nats: [nats.pid], etcd: [etcd.pid] }) : undefined;
  const common = { rpc, core, poolId: pool.poolId, nodes: names, expect: hosts.length - 1, subject: SUBJ.seen, aggregated: false, placed, cpu };
  await measureEndpoints({ ...common, count: WARMUP, label: 'warm-up' });
  const real = await measureEndpoints({ ...common, count: N, label: 'real' });

  // Every kernel holds exactly the other hosts' blocks (a /32 each) with protocol 201, and nothing else.
  let kernelOk = 0;
  const kernelProblems = [];
  for (const h of hosts) {
    const out = await lab.execOk(h, 'ip', ['-4', 'route', 'show', 'proto', '201']);
    const have = new Set(out.trim().split('\n').filter(Boolean).map((l) => l.split(' ')[0]));
    const want = new Set(placed.filter((b) => b.node !== h.name).map((b) => b.dst.replace(/\/32$/, '')));
    const extra = [...have].filter((x) => !want.has(x));
    const lack = [...want].filter((x) => !have.has(x));
    if (extra.length === 0 && lack.length === 0) kernelOk++;
    else kernelProblems.push(`${h.name}: ${lack.length} missing, ${extra.length} extra`);
  }
  progress(`kernels checked: ${kernelOk}/${hosts.length} hold exactly the other hosts' routes${kernelProblems.length ? ` (${kernelProblems.join('; ')})` : ''}`);

  // Stop the real hosts' harnesses before the simulation (their CPU would only add noise).
  for (const pr of lab.processesInHosts()) {
    try {
      process.kill(pr.pid, 'SIGTERM');
    } catch {}
  }
  await sleep(500);

  progress(`simulation: ${SIM_AGENTS} agents (ClusterView + RouteService each, in-memory route tables) in ${simShards(SIM_AGENTS).length} process(es)`);
  const simPool = await rpc.call('requestPool', { node: 'sim000', space: 'underlay', pool: SIM_POOL, subPool: '', options: { block_size: '32' }, v6: false, requestId: randomUUID() }, core.RequestPoolRes);
  const shards = simShards(SIM_AGENTS);
  const simReady = collect(nc, SUBJ.simReady, shards.length, 300_000);
  await nc.flush();
  const prof = process.env.BENCH_ROUTES_SIM_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_ROUTES_SIM_PROF}`] : [];
  shards.forEach(([from, count], k) => lab.spawn(process.execPath, [...prof, __filename, '--sim', String(count), nats.url, simPool.poolId, String(from)], { name: `routes-sim-${k}`, cwd: ROOT }));
  await simReady;
  const simNames = Array.from({ length: SIM_AGENTS }, (_, i) => `sim${String(i).padStart(3, '0')}`);
  const simCommon = { rpc, core, poolId: simPool.poolId, nodes: simNames, expect: SIM_AGENTS - 1, subject: SUBJ.simSeen, aggregated: true };
  await measureEndpoints({ ...simCommon, count: WARMUP, label: 'sim warm-up' });
  const sim = await measureEndpoints({ ...simCommon, count: N, label: 'sim' });

  await destroyAll();

  // ---- report ---------------------------------------------------------------------------------------
  const r = stats(real.samples.map((x) => x.ms));
  const rr = stats(real.samples.map((x) => x.replyMs));
  const s = stats(sim.samples.map((x) => x.ms));
  const sr = stats(sim.samples.map((x) => x.replyMs));
  const part = (xs, k) => stats(xs.samples.filter((x) => x[k] !== undefined).map((x) => x[k]));
  const [re, rf, se, sf] = [part(real, 'eventMs'), part(real, 'fanoutMs'), part(sim, 'eventMs'), part(sim, 'fanoutMs')];
  console.log(`route convergence: RequestAddress sent (block_size=32, one new block) → route present on every other host`);
  console.log(
    table(
      ['part', 'hosts', 'endpoints', 'missing', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'reply p50/p99', 'event p50/p99', 'fan-out p50/p99', 'target p99', 'p99/target'],
      [
        ['real (netns, rtnetlink)', String(hosts.length), String(r.n), String(real.missing), f1(r.p50), f1(r.p90), f1(r.p99), f1(r.max), `${f1(rr.p50)}/${f1(rr.p99)}`, `${f1(re.p50)}/${f1(re.p99)}`, `${f1(rf.p50)}/${f1(rf.p99)}`, `${TARGET.p99Ms} ms`, (r.p99 / TARGET.p99Ms).toFixed(2)],
        ['simulated (in-memory)', String(SIM_AGENTS), String(s.n), String(sim.missing), f1(s.p50), f1(s.p90), f1(s.p99), f1(s.max), `${f1(sr.p50)}/${f1(sr.p99)}`, `${f1(se.p50)}/${f1(se.p99)}`, `${f1(sf.p50)}/${f1(sf.p99)}`, `${TARGET.simP99Ms} ms`, (s.p99 / TARGET.simP99Ms).toFixed(2)],
      ],
    ),
  );
  console.log(
    'reply = RequestAddress answered (durable in etcd); event = the first agent got the BlockClaimed event (commit + JetStream publish); ' +
      'fan-out = from that first event to the last route applied (stream delivery to every agent + RouteService + rtnetlink).',
  );
  console.log(
    `real: ${hosts.length} network namespaces on the host kernel, each running the agent's route path (ClusterView on the JetStream stream + RouteService) ` +
      `with real rtnetlink; the parent is a veth (eth1), because the host kernel has no ipvlan; IPAM through the controller as an agent's RequestAddress. ` +
      `Time = until the last of the ${hosts.length - 1} other kernels acknowledged the route. Kernels checked afterwards: ${kernelOk}/${hosts.length} exact.`,
  );
  console.log(
    `simulated: ${SIM_AGENTS} agents (each its own NATS connection, ClusterView and RouteService) in ${simShards(SIM_AGENTS).length} process(es) (one per CPU), applying routes to an IN-MEMORY table (MemoryRouteOps), not a kernel. ` +
      `Time = until the last of the ${SIM_AGENTS - 1} other agents added the route.`,
  );
  // Where the time goes on the real hosts: per endpoint, the stages of the host that was last.
  const traced = real.samples.filter((x) => x.hosts?.length && x.hosts.every((h) => h.tTake !== undefined && h.tAdd !== undefined));
  if (traced.length) {
    const deep = traced.every((x) => x.hosts.every((h) => h.runMs !== undefined));
    const rows = traced.map((x) => {
      const last = x.hosts.reduce((a, b) => (b.t > a.t ? b : a));
      const firstTake = Math.min(...x.hosts.map((h) => h.tTake));
      const sum = (f) => x.hosts.reduce((n, h) => n + f(h), 0);
      return {
        x,
        last,
        firstTakeMs: firstTake - x.ts,
        spreadMs: last.tTake - firstTake,
        viewMs: last.tView - last.tTake,
        passMs: last.tAdd - last.tView,
        kernelMs: last.t - last.tAdd,
        ...(deep ? { cpuAllMs: sum((h) => h.runMs), waitLastMs: last.wakeWaitMs + last.waitMs, gcAllMs: sum((h) => h.gcMs + h.gcBeforeMs), majors: sum((h) => h.gcMajor) } : {}),
      };
    });
    const d = (k) => {
      const st = stats(rows.map((r) => r[k]));
      return [k, f1(st.p50), f1(st.p90), f1(st.p99), f1(st.max)];
    };
    console.log('stages (real; the host that was last for each endpoint): firstTakeMs = request sent → the first view applied the BlockClaimed; spreadMs = first → last host applied it;');
    console.log('  then on the last host: viewMs = applied → the view\'s listeners ran; passMs → the RouteService asked rtnetlink; kernelMs → the kernel acknowledged');
    if (deep) console.log('  (BENCH_ROUTES_TRACE=1) cpuAllMs = main-thread CPU of all agents for it; waitLastMs = the last host runnable but not running; gcAllMs = GC time in all agents');
    const keys = ['firstTakeMs', 'spreadMs', 'viewMs', 'passMs', 'kernelMs', ...(deep ? ['cpuAllMs', 'waitLastMs', 'gcAllMs'] : [])];
    console.log(table(['stage', 'p50', 'p90', 'p99', 'max'], keys.map(d)));
    for (const r of [...rows].sort((a, b) => b.x.ms - a.x.ms).slice(0, 3)) {
      const more = deep
        ? ` run ${f1(r.last.runMs)} wait ${f1(r.last.waitMs)} wake-wait ${f1(r.last.wakeWaitMs)} gc ${f1(r.last.gcMs)}+${f1(r.last.gcBeforeMs)}); all agents: cpu ${f1(r.cpuAllMs)} gc ${f1(r.gcAllMs)} major GCs ${r.majors}`
        : ')';
      console.log(`  slowest: #${real.samples.indexOf(r.x)} ${r.x.dst} ${f1(r.x.ms)} ms: reply ${f1(r.x.replyMs)}, first take ${f1(r.firstTakeMs)}, spread ${f1(r.spreadMs)} (last ${r.last.node}: view ${f1(r.viewMs)} pass ${f1(r.passMs)} kernel ${f1(r.kernelMs)}${more}`);
    }
  }
  const withCpu = real.samples.filter((x) => x.cpu);
  if (withCpu.length) {
    const cls = Object.keys(withCpu[0].cpu).filter((k) => k !== 'machine');
    const d = (name, f) => {
      const st = stats(withCpu.map(f));
      return [name, f1(st.p50), f1(st.p90), f1(st.p99), f1(st.max)];
    };
    console.log('CPU per endpoint (real; between two endpoints, all threads): run / runnable-wait ms per process class; machine busy/idle/steal from /proc/stat (10 ms ticks)');
    console.log(
      table(['what', 'p50', 'p90', 'p99', 'max'], [
        ...cls.flatMap((c) => [d(`${c} run`, (x) => x.cpu[c].run), d(`${c} wait`, (x) => x.cpu[c].wait)]),
        ...Object.keys(withCpu[0].cpu.agents).filter((k) => k.startsWith('run_')).map((k) => d(`agents ${k}`, (x) => x.cpu.agents[k] ?? 0)),
        d('machine busy', (x) => x.cpu.machine.busy),
        d('machine idle', (x) => x.cpu.machine.idle),
        d('machine steal', (x) => x.cpu.machine.steal),
      ]),
    );
    for (const x of [...withCpu].sort((a, b) => b.ms - a.ms).slice(0, 5)) {
      console.log(`  slow #${real.samples.indexOf(x)} ${f1(x.ms)} ms: ${cls.map((c) => `${c} ${f1(x.cpu[c].run)}/${f1(x.cpu[c].wait)}`).join(', ')}; machine busy ${x.cpu.machine.busy} idle ${x.cpu.machine.idle} steal ${x.cpu.machine.steal}`);
    }
  }
  if (process.env.BENCH_ROUTES_DUMP) fs.writeFileSync(process.env.BENCH_ROUTES_DUMP, JSON.stringify({ real: real.samples, sim: sim.samples }));
  const missed = [];
  if (!(r.p99 <= TARGET.p99Ms) || real.missing) missed.push(`real p99 ${f1(r.p99)} ms > ${TARGET.p99Ms} ms${real.missing ? ` or ${real.missing} missing` : ''}`);
  if (!(s.p99 <= TARGET.simP99Ms) || sim.missing) missed.push(`sim p99 ${f1(s.p99)} ms > ${TARGET.simP99Ms} ms${sim.missing ? ` or ${sim.missing} missing` : ''}`);
  if (kernelOk !== hosts.length) missed.push(`${hosts.length - kernelOk} kernels not exact`);
  console.log(`(${machine.line})`);
  console.log(missed.length ? `target missed: ${missed.join(', ')}` : `target met: p99 ${f1(r.p99)} ≤ ${TARGET.p99Ms} ms on ${hosts.length} hosts, sim p99 ${f1(s.p99)} ≤ ${TARGET.simP99Ms} ms on ${SIM_AGENTS} agents`);
  const int = (x) => (Number.isFinite(x) ? String(Math.round(x)) : 'NaN');
  console.log(`routes hosts=${hosts.length} p50_ms=${int(r.p50)} p99_ms=${int(r.p99)} sim_agents=${SIM_AGENTS} sim_p99_ms=${int(s.p99)}`);
}

// ---- entry -----------------------------------------------------------------------------------------

const mode = process.argv[2];
if (mode === '--agent') {
  agentMode(process.argv.slice(3)).catch((e) => {
    console.error(`agent harness failed: ${e.stack || e}`);
    process.exit(1);
  });
} else if (mode === '--sim') {
  simMode(process.argv.slice(3)).catch((e) => {
    console.error(`simulation failed: ${e.stack || e}`);
    process.exit(1);
  });
} else {
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      if (interrupted) return;
      interrupted = true;
      progress(`${sig}: destroying the lab`);
      destroyAll()
        .catch((e) => progress(`lab teardown: ${e.message}`))
        .finally(() => process.exit(130));
    });
  }
  main().then(
    () => process.exit(0),
    async (err) => {
      console.error(`bench:routes failed: ${err && err.stack ? err.stack : err}`);
      await destroyAll().catch((e) => progress(`lab teardown: ${e.message}`));
      process.exit(1);
    },
  );
}
