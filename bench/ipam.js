#!/usr/bin/env node
'use strict';
/**
 * `npm run bench:ipam` (issues 3 and 10): durable IPAM allocations per second and p50/p99 latency
 * through the full path — a NATS client doing what an agent does → controller → etcd group commit →
 * reply — at 1, 8 and 64 concurrent closed-loop requesters, and, against the same etcd in the same
 * run, etcd's raw sequential compare-and-swap transaction rate, so the ratio shows what group commit
 * buys.
 *
 * It runs twice, one mode after the other, each with servers of its own (bench/lib/servers.js):
 *   plain    etcd and nats-server without users or TLS;
 *   secured  everything on: nats-server with decentralized authentication (the controller with
 *            controller creds, each requester connection with its own node's creds and inbox prefix)
 *            and TLS; etcd with client TLS (certificates required) and a user.
 * Each mode starts its own etcd and nats-server on free 127.0.0.1 ports in a temp dir and the
 * controller in this process; it stops all of them and removes the temp dir at the end, on error and
 * on Ctrl-C. Needs a build first (`npx tsc -b`). Profile with
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof bench/ipam.js
 *   node bench/lib/cpuprofile.js /tmp/prof/*.cpuprofile --from <s> --to <s>
 * (the [N.Ns] stamps on stderr are seconds since start, matching the profile's clock).
 *
 * For the 64-requester phase of each mode it prints
 *   ipam mode=<plain|secured> allocations_per_s=<n> p99_ms=<n> duplicates=<n> etcd_raw_txn_per_s=<n>
 * and the last line of stdout puts the modes side by side:
 *   ipam plain: 5,210 allocations/s p99 26 ms | secured (NATS users + TLS, etcd TLS + user): 5,120 allocations/s p99 27 ms
 * The exit code is 0 even when the targets are missed (a line before says so); it is 1 only when the
 * benchmark itself could not run.
 *
 * Environment knobs:
 *   BENCH_IPAM_PHASE_MS   duration of each phase (5000)
 *   BENCH_IPAM_RAW_MS     duration of the raw etcd loop (3000)
 *   BENCH_IPAM_WARMUP     warm-up requests (500)
 *   BENCH_IPAM_CONNS      NATS connections shared by the requesters (8)
 *   BENCH_IPAM_CLIENTS    inline (default: requesters share this thread's event loop with the
 *                         controller) or worker (requesters in a worker thread, as separate agents)
 *   BENCH_IPAM_MODE       both (default), plain or secured (also `--mode <m>` on the command line)
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { performance, monitorEventLoopDelay } = require('node:perf_hooks');
const { MODES, startServers, stopAll, killAllSync, sleep } = require('./lib/servers.js');
const { createRequesters, nodeName } = require('./lib/requesters.js');

let Controller, EtcdEventLog, createEtcdClient;
try {
  ({ Controller } = require('@underlay/controller'));
  ({ EtcdEventLog, createEtcdClient } = require('@underlay/adapters'));
} catch (e) {
  console.error(`bench:ipam: cannot load the compiled packages (${e.message}); run \`npx tsc -b\` first`);
  process.exit(1);
}

const envNum = (name, dflt) => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : dflt;
};
const PHASE_MS = envNum('BENCH_IPAM_PHASE_MS', 5_000);
const RAW_MS = envNum('BENCH_IPAM_RAW_MS', 3_000);
const WARMUP = envNum('BENCH_IPAM_WARMUP', 500);
const CONNS = envNum('BENCH_IPAM_CONNS', 8);
const CLIENTS = process.env.BENCH_IPAM_CLIENTS || 'inline';
const modeArg = process.argv.indexOf('--mode');
const MODE = (modeArg > 0 ? process.argv[modeArg + 1] : process.env.BENCH_IPAM_MODE) || 'both';
if (!['both', ...Object.keys(MODES)].includes(MODE)) {
  console.error(`bench:ipam: unknown mode ${JSON.stringify(MODE)} (both, plain or secured)`);
  process.exit(1);
}
const RUN_MODES = MODE === 'both' ? Object.keys(MODES) : [MODE];
const PHASES = [1, 8, 64];
/** Upper bound of requests per phase, in addition to the time bound. */
const MAX_PER_PHASE = 500_000;
const TARGET = { allocsPerS: 5_000, p99Ms: 25 };

const progress = (msg) => process.stderr.write(`bench:ipam: [${(performance.now() / 1000).toFixed(1)}s] ${msg}\n`);

// ---- cleanup, also on error and Ctrl-C ------------------------------------------------------------

/** The running mode's parts (reset for each mode). */
let state = newState();
function newState() {
  return { dir: undefined, pids: {}, controller: undefined, requesters: undefined, appendMs: undefined, cleaned: undefined, tally: newTally() };
}

const withTimeout = (p, ms) => Promise.race([Promise.resolve(p).catch(() => {}), sleep(ms)]);

function cleanup() {
  state.cleaned ??= (async () => {
    if (state.requesters) await withTimeout(state.requesters.close(), 5_000);
    if (state.controller) await withTimeout(state.controller.stop(), 10_000);
    await stopAll();
    if (state.dir) fs.rmSync(state.dir, { recursive: true, force: true });
  })();
  return state.cleaned;
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    progress(`${sig}: stopping etcd and nats-server, removing ${state.dir ?? 'nothing'}`);
    withTimeout(cleanup(), 15_000).finally(() => process.exit(130));
  });
}
process.on('exit', () => {
  // Last resort if something bypassed cleanup(): SIGKILL what is still running, remove the dir.
  killAllSync();
  if (state.dir) fs.rmSync(state.dir, { recursive: true, force: true });
});

// ---- measurements ---------------------------------------------------------------------------------

const CLK_TCK = 100;
/** CPU seconds (user + system) of a process from /proc (Linux); NaN elsewhere. */
function procCpuS(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU seconds the whole machine spent busy (all cores, all processes) and stolen by the hypervisor. */
function machineCpuS() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
    return { busy: (user + nice + system + irq + softirq) / CLK_TCK, steal: (steal || 0) / CLK_TCK, idle: (idle + iowait) / CLK_TCK };
  } catch {
    return { busy: NaN, steal: NaN, idle: NaN };
  }
}

function cpuSnapshot() {
  const u = process.cpuUsage();
  const m = machineCpuS();
  return { self: (u.user + u.system) / 1e6, etcd: procCpuS(state.pids.etcd), nats: procCpuS(state.pids.nats), machine: m.busy, steal: m.steal };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i];
}

/** Every acknowledged allocation of a mode, per pool, and the replies that repeated an address. */
function newTally() {
  return { acked: new Map() /* poolId -> Set(address without prefix) */, replyDuplicates: 0, ackedCount: 0 };
}
function recordAck(poolId, cidrAddress) {
  const t = state.tally;
  const addr = cidrAddress.split('/')[0];
  let set = t.acked.get(poolId);
  if (!set) t.acked.set(poolId, (set = new Set()));
  if (set.has(addr)) t.replyDuplicates++;
  else set.add(addr);
  t.ackedCount++;
}

/** Runs one phase and reads the controller's counters and this process's health around it. */
async function phase(poolId, requesters, durationMs, maxRequests) {
  const c = state.controller;
  const appendMs = (state.appendMs = []);
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  loopDelay.enable();
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = cpuSnapshot();
  const txn0 = c.ipam.transactions;
  const seq0 = c.ipam.state.seq;

  const res = await state.requesters.run({ poolId, requesters, durationMs, maxRequests });

  const elapsedS = res.elapsedMs / 1000;
  const txns = c.ipam.transactions - txn0;
  const events = c.ipam.state.seq - seq0;
  const cpu1 = cpuSnapshot();
  const elu = performance.eventLoopUtilization(elu0).utilization;
  loopDelay.disable();
  state.appendMs = undefined;
  for (const a of res.addresses) recordAck(poolId, a);
  const sorted = Float64Array.from(res.lat).sort();
  const appendSorted = Float64Array.from(appendMs).sort();
  return {
    requesters,
    done: sorted.length,
    errors: res.errors,
    firstError: res.firstError,
    allocsPerS: sorted.length / elapsedS,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    txns,
    eventsPerTxn: txns ? events / txns : 0,
    appendP50: percentile(appendSorted, 0.5),
    appendP99: percentile(appendSorted, 0.99),
    loopDelayP99: loopDelay.percentile(99) / 1e6,
    /** Share of the time this (controller) thread's event loop was busy. */
    elu,
    /** Share of one core each process used during the phase (2 cores = 200%). */
    cpu: Object.fromEntries(Object.keys(cpu0).map((k) => [k, (100 * (cpu1[k] - cpu0[k])) / elapsedS])),
  };
}

/** etcd's raw rate: one compare-and-swap transaction at a time, each waiting for its commit. */
async function rawEtcdCas(etcdClient, durationMs) {
  // The controller's client construction (TLS, user, per-call deadline); a key the `underlay` user may write.
  const client = createEtcdClient(etcdClient);
  try {
    const key = '/underlay/bench/raw-cas';
    let v = 0;
    await client.put(key).value(String(v));
    const step = async () => {
      const res = await client.if(key, 'Value', '==', String(v)).then(client.put(key).value(String(v + 1))).commit();
      if (!res.succeeded) throw new Error(`raw compare-and-swap failed at ${v}`);
      v++;
    };
    // Warm up so connection setup and JIT are not in the measurement.
    for (let i = 0; i < 50; i++) await step();
    let n = 0;
    const t0 = performance.now();
    const deadline = t0 + durationMs;
    while (performance.now() < deadline && n < 1_000_000) {
      await step();
      n++;
    }
    return n / ((performance.now() - t0) / 1000);
  } finally {
    client.close();
  }
}

/** Reads the log back and checks every acknowledged address is exactly one AddressAllocated event. */
async function verifyLog(etcdClient) {
  const { acked } = state.tally;
  const log = new EtcdEventLog(etcdClient);
  try {
    const events = await log.readAll();
    let gaps = 0;
    events.forEach((e, i) => {
      if (e.seq !== i + 1) gaps++;
    });
    const counts = new Map();
    let logDuplicates = 0;
    for (const e of events) {
      if (e.type !== 'AddressAllocated') continue;
      const k = `${e.data.poolId} ${e.data.address}`;
      const n = (counts.get(k) ?? 0) + 1;
      counts.set(k, n);
      if (n > 1) logDuplicates++;
    }
    let lost = 0;
    for (const [poolId, set] of acked) for (const addr of set) if (!counts.get(`${poolId} ${addr}`)) lost++;
    return { events: events.length, gaps, logDuplicates, lost };
  } finally {
    log.close();
  }
}

const fmt = {
  int: (x) => (Number.isFinite(x) ? String(Math.round(x)) : 'n/a'),
  f1: (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a'),
};

function table(header, rows) {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => cells.map((c, i) => c.padStart(w[i])).join(' | ');
  return [line(header), w.map((n) => '-'.repeat(n)).join('-|-'), ...rows.map(line)].join('\n');
}

// ---- main -----------------------------------------------------------------------------------------

/** One mode from start to cleanup: servers, controller, requesters, phases, log check. */
async function runMode(mode) {
  state = newState();
  const tStart = performance.now();
  const load0 = os.loadavg()[0];
  state.dir = fs.mkdtempSync(path.join(os.tmpdir(), `ul-bench-ipam-${mode}-`));
  progress(`${MODES[mode]}: starting etcd and nats-server in ${state.dir}`);
  const servers = await startServers(mode, state.dir);
  const { etcd, nats } = servers;
  state.pids = { etcd: etcd.pid, nats: nats.pid };
  progress(`etcd ${etcd.url} (pid ${etcd.pid}), nats-server ${nats.url} (pid ${nats.pid})`);

  progress(`etcd raw sequential compare-and-swap for ${RAW_MS} ms`);
  const rawTxnPerS = await rawEtcdCas(servers.etcdClient, RAW_MS);

  // eventRetention 0: verifyLog reads the whole log back, so nothing may be trimmed behind snapshots.
  const controller = new Controller(
    { etcd: [etcd.url], nats: nats.url, listen: '127.0.0.1:0', name: 'bench', eventRetention: 0, ...servers.controller },
    (m) => {
      if (/fail/i.test(m)) progress(`controller: ${m}`);
    },
  );
  state.controller = controller;
  await controller.start();
  // A controller serves requests only as the leader (a single one here wins at once).
  if (typeof controller.whenLeader === 'function') await controller.whenLeader();
  // Diagnostics only: time each etcd append of the group commit as the controller sees it
  // (the transaction plus any wait in this event loop before its reply is handled).
  const append = controller.log.append.bind(controller.log);
  controller.log.append = async (...args) => {
    const t = performance.now();
    try {
      return await append(...args);
    } finally {
      state.appendMs?.push(performance.now() - t);
    }
  };

  // Connection i speaks for node nodeName(i), with that node's own credentials in the secured mode.
  const connOpts = await Promise.all(Array.from({ length: CONNS }, (_, i) => servers.nodeConnect(nodeName(i))));
  state.requesters = await createRequesters({ natsUrl: nats.url, conns: CONNS, connOpts, mode: CLIENTS });
  progress(`controller up; ${CONNS} NATS connections for the requesters (${CLIENTS}); warm-up: ${WARMUP} requests from 8 requesters`);
  // IPAM data only, never configured on any link: IPv6 documentation prefix 2001:db8::/32, one /64 per phase.
  const warmPool = await state.requesters.openPool('2001:db8:a0::/64');
  await phase(warmPool, 8, 60_000, WARMUP);
  await controller.flushEvents();

  const results = [];
  for (const requesters of PHASES) {
    const poolId = await state.requesters.openPool(`2001:db8:${requesters}::/64`);
    const r = await phase(poolId, requesters, PHASE_MS, MAX_PER_PHASE);
    // The controller publishes committed events to JetStream behind the replies; let it catch up so
    // one phase's backlog does not slow the next (the wait is reported).
    const tf = performance.now();
    await controller.flushEvents();
    r.publishLagMs = performance.now() - tf;
    results.push(r);
    progress(
      `${mode}, ${requesters} requesters: ${fmt.int(r.allocsPerS)} allocs/s, p50 ${fmt.f1(r.p50)} ms, p99 ${fmt.f1(r.p99)} ms, ` +
        `${r.txns} txns, ${fmt.f1(r.eventsPerTxn)} events/txn, ${r.errors} errors; etcd append p50/p99 ` +
        `${fmt.f1(r.appendP50)}/${fmt.f1(r.appendP99)} ms; controller loop busy ${fmt.int(100 * r.elu)}%, delay p99 ` +
        `${fmt.f1(r.loopDelayP99)} ms; JetStream caught up ${fmt.int(r.publishLagMs)} ms after`,
    );
    if (r.firstError) progress(`  first error: ${r.firstError}`);
  }

  progress('reading the log back from etcd');
  const v = await verifyLog(servers.etcdClient);
  await cleanup();
  state.dir = undefined;
  const { replyDuplicates, ackedCount } = state.tally;
  // An address handed out twice shows in the replies and (if both were durable) in the log; count it once.
  const duplicates = Math.max(replyDuplicates, v.logDuplicates);
  return { mode, results, last: results[results.length - 1], rawTxnPerS, v, duplicates, replyDuplicates, ackedCount, load0, totalS: (performance.now() - tStart) / 1000 };
}

/** A mode's table and checks (stdout). */
function report(m) {
  const { results, last, rawTxnPerS, v, duplicates } = m;
  console.log(`== ${MODES[m.mode]}`);
  console.log(
    table(
      ['requesters', 'allocs/s', 'p50 ms', 'p99 ms', 'txns', 'events/txn', 'append p50/p99 ms', 'loop busy %', 'cpu % node/etcd/nats/other', 'node cpu us/alloc', 'errors'],
      results.map((r) => [
        String(r.requesters),
        fmt.int(r.allocsPerS),
        fmt.f1(r.p50),
        fmt.f1(r.p99),
        String(r.txns),
        fmt.f1(r.eventsPerTxn),
        `${fmt.f1(r.appendP50)}/${fmt.f1(r.appendP99)}`,
        fmt.int(100 * r.elu),
        [r.cpu.self, r.cpu.etcd, r.cpu.nats, Math.max(0, r.cpu.machine - r.cpu.self - r.cpu.etcd - r.cpu.nats)].map(fmt.int).join('/'),
        fmt.int((r.cpu.self * 1e4) / r.allocsPerS),
        String(r.errors),
      ]),
    ),
  );
  console.log(`etcd raw sequential compare-and-swap txn/s:         ${fmt.int(rawTxnPerS)}`);
  console.log(`group commit gain, allocations_per_s(64) / raw txn/s: ${(last.allocsPerS / rawTxnPerS).toFixed(1)}x`);
  console.log(
    `verify: acknowledged=${m.ackedCount} log_events=${v.events} seq_gaps=${v.gaps} reply_duplicates=${m.replyDuplicates} ` +
      `log_duplicates=${v.logDuplicates} lost=${v.lost} (requesters ${CLIENTS}, ${os.cpus().length} CPUs, load average ${m.load0.toFixed(1)} at start, run ${m.totalS.toFixed(1)} s)`,
  );
  const missed = [];
  if (!(last.allocsPerS >= TARGET.allocsPerS)) missed.push(`allocations_per_s ${fmt.int(last.allocsPerS)} < ${TARGET.allocsPerS}`);
  if (!(last.p99 <= TARGET.p99Ms)) missed.push(`p99_ms ${fmt.f1(last.p99)} > ${TARGET.p99Ms}`);
  if (duplicates > 0) missed.push(`duplicates ${duplicates} > 0`);
  if (v.lost > 0) missed.push(`lost ${v.lost} > 0`);
  if (v.gaps > 0) missed.push(`seq_gaps ${v.gaps} > 0`);
  if (missed.length) console.log(`${m.mode}: target missed: ${missed.join(', ')}`);
  else console.log(`${m.mode}: target met: >= ${TARGET.allocsPerS} allocations/s, p99 <= ${TARGET.p99Ms} ms, 0 duplicates`);
  console.log(
    `ipam mode=${m.mode} allocations_per_s=${fmt.int(last.allocsPerS)} p99_ms=${fmt.f1(last.p99)} duplicates=${duplicates} etcd_raw_txn_per_s=${fmt.int(rawTxnPerS)}`,
  );
  console.log('');
}

async function main() {
  const modes = [];
  for (const mode of RUN_MODES) modes.push(await runMode(mode));
  for (const m of modes) report(m);
  console.log(
    '(cpu: % of one core during the phase; "other" is every other process on this machine; when it is high the numbers are low and noisy)',
  );
  const perSecond = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
  const p99 = (x) => (Number.isFinite(x) ? (x < 10 ? x.toFixed(1) : String(Math.round(x))) : 'n/a');
  console.log(`ipam ${modes.map((m) => `${m.mode === 'plain' ? 'plain' : MODES[m.mode]}: ${perSecond(m.last.allocsPerS)} allocations/s p99 ${p99(m.last.p99)} ms`).join(' | ')}`);
}

main().then(
  () => process.exit(0),
  async (err) => {
    console.error(`bench:ipam failed: ${err && err.stack ? err.stack : err}`);
    await withTimeout(cleanup(), 15_000);
    process.exit(1);
  },
);
