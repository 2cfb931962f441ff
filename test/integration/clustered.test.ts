/**
 * Clustered etcd and NATS, all on loopback: a three-member etcd cluster, a three-node NATS cluster with JetStream,
 * two controller processes (one leader by election) given every endpoint of both (`--etcd a,b,c --nats x,y,z`) and
 * the event stream with three replicas (`--events-replicas 3`). Requesters allocate addresses under load while the
 * etcd raft leader is killed (SIGKILL) and restarted, then the NATS server the leading controller is connected to.
 *
 * Asserted: no address handed out twice, every acknowledged allocation in the state folded from etcd's log, the
 * JetStream stream (three replicas) holding every event once; service restored within 5 s of each kill (from the
 * kill to the first allocation sent after it that is acknowledged; printed with the time until every requester was
 * served again); the errors requesters saw and the warnings and errors the controllers logged during each gap name
 * the part that was unavailable (etcd, NATS, JetStream), without "undefined" or a stack trace.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { EtcdEventLog, RpcClient, connectNats, controllerCreds, initNatsKeys, natsServerConfig, nodeCreds, writePrivateFile, type NatsConnection } from '@underlay/adapters';
import { EVENTS_STREAM, RequestAddressRes, RequestPoolRes, fold, headers, nodeInboxPrefix, parseAddr, toErrorBody } from '@underlay/core';
import { spawnLogged, stopProcess, type Proc } from '../lab/spawn';
import { waitFor } from '../lab/wait';
import { freePort, httpGet } from '../lab/probes';
import { labFactor } from '../lab/budget';
import { startEtcdCluster, startNatsCluster, type ClusterMember, type EtcdCluster, type NatsCluster } from '../lab/clusters';
import { CLI, ensureBuilt } from '../e2e/support/cluster';
import { mac, spawnCollecting } from './support';
import { startEtcd, startNats } from '../lab/services';

// --- budgets -------------------------------------------------------------------------------------------------
/**
 * Longest durations measured on the development VM (2 vCPU; eleven runs, each divided by its machine factor, as
 * test/lab/budgets.json does), ms. A step's budget is max(FLOOR_MS, MARGIN × that) × this machine's factor
 * (test/lab/budget.ts: `node -e 0` here over the reference machine's); a step over budget fails naming it, and the
 * suite prints each step's longest duration against its budget.
 */
const MEASURED_MS = {
  'etcd cluster start': 1_200,
  'NATS cluster start': 450,
  'controllers start and elect a leader': 800,
  'etcd member restart': 250,
  'NATS server restart': 2_600,
  'stream replicas current again': 2_400,
  'every requester served again': 1_000,
  'stream catches up with the log': 1_500,
  'leader puts the stream back to 3 replicas': 800,
  'controller refuses 3 replicas on a single server': 500,
} as const;
type Step = keyof typeof MEASURED_MS;
const MARGIN = 4;
const FLOOR_MS = 5_000;
const budget = (step: Step) => Math.ceil(Math.max(FLOOR_MS, MEASURED_MS[step] * MARGIN) * labFactor());

/** The acceptance figure: service restored within this long of each kill. */
const RESTORE_MS = 5_000;
/** How long the test waits for the first acknowledged allocation after a kill before it fails (the figure is asserted separately). */
const RESTORE_WAIT_MS = 15_000;
/** Load between the steps, so each kill happens under load and the service is seen working after each restart. */
const STEADY_MS = 1_500;

/** Requester hosts, each with its own NATS connection (spread over the servers), and loops per host. */
const HOSTS = 6;
const LOOPS = 4;
/** Bounds of the load: requests per loop, and a time bound over the whole scenario. */
const MAX_PER_LOOP = 4_000;
/**
 * Per attempt and per call (the RPC client retries retriable failures within the call's deadline). Agents wait 10 s per
 * attempt; here 2 s, so a request lost inside the killed NATS server (no answer ever comes) holds its requester 2 s.
 */
const ATTEMPT_MS = 2_000;
const CALL_MS = 3_000;
const POOL = '198.18.0.0/15';
/** The controllers' etcd deadline (README: with an etcd cluster, shorter than the 5 s the service is to be back within). */
const ETCD_TIMEOUT_MS = 2_000;

const LOAD_BOUND_MS =
  3 * STEADY_MS + 2 * RESTORE_WAIT_MS + budget('etcd member restart') + budget('NATS server restart') + budget('stream replicas current again') + 2 * budget('every requester served again');
/** Per test: its bounded steps, and a minute for reading the log and the checks. */
jest.setTimeout(budget('NATS cluster start') + budget('controllers start and elect a leader') + LOAD_BOUND_MS + budget('stream catches up with the log') + 60_000);

/** `p`, or a failure naming the step when it takes longer than its budget. */
async function step<T>(name: Step, p: () => Promise<T>): Promise<T> {
  const ms = budget(name);
  const t0 = Date.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`step '${name}' took longer than its budget of ${ms} ms (max(${FLOOR_MS} ms, measured ${MEASURED_MS[name]} ms × margin ${MARGIN}) × machine factor ${labFactor()})`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    took[name] = Math.max(took[name] ?? 0, Date.now() - t0);
  }
}

/** The longest duration of each step in this run. */
const took: Partial<Record<Step, number>> = {};

// --- the clusters and the controllers ---------------------------------------------------------------------------
let dir: string;
let etcd: EtcdCluster;
let nats: NatsCluster;
const controllers = new Map<string, { proc: Proc; port: number; logFile: string }>();
const conns: NatsConnection[] = [];

beforeAll(async () => {
  await ensureBuilt();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-clustered-'));
  [etcd, nats] = await Promise.all([
    step('etcd cluster start', () => startEtcdCluster({ dir, name: 'etcd', timeoutMs: budget('etcd cluster start') })),
    step('NATS cluster start', () => startNatsCluster({ dir, name: 'nats', timeoutMs: budget('NATS cluster start') })),
  ]);
}, budget('etcd cluster start') + budget('NATS cluster start') + 120_000);

afterAll(async () => {
  console.log(`step durations (longest, ms, of budget; machine factor ${labFactor()}): ${Object.entries(took).map(([k, v]) => `${k} ${v} of ${budget(k as Step)}`).join(', ')}`);
  for (const { proc } of controllers.values()) await stopProcess(proc, 'SIGTERM', 5_000).catch(() => {});
  await Promise.all(conns.map((nc) => nc.close().catch(() => {})));
  await Promise.all([etcd?.stop(), nats?.stop()]);
  if (dir && !process.env.UNDERLAY_KEEP) fs.rmSync(dir, { recursive: true, force: true });
});

async function startController(name: string, endpoints: string[], servers: string[], extra: string[] = []): Promise<void> {
  const port = await freePort();
  const logFile = path.join(dir, `${name}.log`);
  const proc = spawnLogged(
    process.execPath,
    // --etcd-timeout-ms 2000: a transaction lost with a dying etcd leader gets no answer; it is given up after this long.
    [CLI, 'controller', '--etcd', endpoints.join(','), '--nats', servers.join(','), '--events-replicas', '3', '--etcd-timeout-ms', String(ETCD_TIMEOUT_MS), '--listen', `127.0.0.1:${port}`, '--name', name, '--log-format', 'json', ...extra],
    { name, logFile },
  );
  controllers.set(name, { proc, port, logFile });
}

async function role(name: string): Promise<string | undefined> {
  const c = controllers.get(name);
  if (!c || !c.proc.isRunning()) return undefined;
  const r = await httpGet(`http://127.0.0.1:${c.port}/healthz`, 1_000).catch(() => undefined);
  return r ? (JSON.parse(r.body) as { role?: string }).role : undefined;
}

async function leaderName(timeoutMs: number, among: string[] = [...controllers.keys()]): Promise<string> {
  let found = '';
  await waitFor(
    async () => {
      for (const n of among) if ((await role(n)) === 'leader') return (found = n), true;
      return false;
    },
    { timeoutMs, intervalMs: 50, what: 'a leading controller (GET /healthz role leader)' },
  );
  return found;
}

/** The NATS server a client connection with this name is on (from each server's /connz). */
async function serverOf(connName: string): Promise<ClusterMember | undefined> {
  for (const m of nats.members) {
    if (!m.running()) continue;
    const r = await httpGet(`${m.monitorUrl}/connz?limit=1024`, 1_000).catch(() => undefined);
    const conns = r ? ((JSON.parse(r.body) as { connections?: { name?: string }[] }).connections ?? []) : [];
    if (conns.some((c) => c.name === connName)) return m;
  }
  return undefined;
}

/** The servers that hold a stream (its leader and replicas), sorted. */
function peersOf(c: { leader?: string; replicas?: { name: string }[] } | undefined): string[] {
  return [...new Set([c?.leader, ...(c?.replicas ?? []).map((r) => r.name)].filter((n): n is string => !!n))].sort();
}

/** Lines of the controllers' logs (JSON lines) written in [from, to], at these levels. */
function controllerLines(from: number, to: number, levels = ['warn', 'error']): { who: string; level: string; msg: string; at: number }[] {
  const out: { who: string; level: string; msg: string; at: number }[] = [];
  for (const [who, c] of controllers) {
    for (const line of fs.readFileSync(c.logFile, 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      let j: { time?: string; level?: string; msg?: string };
      try {
        j = JSON.parse(line) as typeof j;
      } catch {
        continue;
      }
      const t = j.time ? Date.parse(j.time) : NaN;
      if (levels.includes(j.level ?? '') && t >= from && t <= to) out.push({ who, level: j.level!, msg: j.msg ?? '', at: t });
    }
  }
  return out.sort((a, b) => a.at - b.at);
}

// --- the load --------------------------------------------------------------------------------------------------
interface Ack {
  host: number;
  loop: number;
  sentAt: number;
  doneAt: number;
  address: string;
  allocSeq: number;
}
interface Failure {
  host: number;
  loop: number;
  sentAt: number;
  at: number;
  code: string;
  text: string;
}

/** What a kill measured: ms to the first acknowledged allocation sent after it, and until every loop had one. */
interface Restore {
  /** The part killed: the controllers' logs during its gap name it. */
  part: 'etcd' | 'NATS';
  what: string;
  victim: string;
  firstMs: number;
  allMs: number;
  killedAt: number;
  restartedAt: number;
}

it('allocates through the loss of an etcd member and of a NATS server: no duplicate, nothing acknowledged lost, restored within 5 s, clear errors', async () => {
  // Each controller gets the endpoints in another order (its first choice differs).
  await step('controllers start and elect a leader', async () => {
    await startController('c1', etcd.endpoints, nats.urls);
    await startController('c2', [...etcd.endpoints].reverse(), [...nats.urls].reverse());
    await leaderName(budget('controllers start and elect a leader'));
  });

  // The stream was made with three replicas, one on each server.
  const admin = await connectNats(nats.urls, 'test-admin');
  conns.push(admin);
  const jsm = await jetstreamManager(admin);
  const info = await jsm.streams.info(EVENTS_STREAM);
  expect(info.config.num_replicas).toBe(3);
  expect(peersOf(info.cluster)).toEqual([...nats.members.map((m) => m.name)].sort());

  // Requesters: one connection per host (each to a server the client picks), every host asks for the pool.
  const rpcs: RpcClient[] = [];
  for (let h = 0; h < HOSTS; h++) {
    const nc = await connectNats(nats.urls, `test-host-${h + 1}`);
    conns.push(nc);
    rpcs.push(new RpcClient(nc, `h${h + 1}`));
  }
  let poolId = '';
  for (const [h, rpc] of rpcs.entries()) {
    poolId = (await rpc.call('requestPool', { node: `h${h + 1}`, space: 'underlay', pool: POOL, subPool: '', options: {}, v6: false }, RequestPoolRes)).poolId;
  }

  const acks: Ack[] = [];
  const failures: Failure[] = [];
  let stop = false;
  const loadStart = Date.now();
  const hardEnd = loadStart + LOAD_BOUND_MS;
  let requests = 0;
  const loop = async (h: number, l: number) => {
    const rpc = rpcs[h]!;
    for (let i = 0; i < MAX_PER_LOOP && !stop && Date.now() < hardEnd; i++) {
      // One MAC per allocation: retried after a failure (the controller answers the same MAC with the same address).
      const req = { node: rpc.node, poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': mac(h * 10_000_000 + l * 1_000_000 + i) } };
      for (;;) {
        if (stop || Date.now() >= hardEnd) return;
        const sentAt = Date.now();
        requests++;
        try {
          const r = await rpc.call('requestAddress', req, RequestAddressRes, { timeoutMs: ATTEMPT_MS, deadlineMs: CALL_MS });
          acks.push({ host: h, loop: l, sentAt, doneAt: Date.now(), address: r.address, allocSeq: r.allocSeq });
          break;
        } catch (e) {
          const b = toErrorBody(e);
          failures.push({ host: h, loop: l, sentAt, at: Date.now(), code: b.code, text: (e as Error).message });
        }
      }
    }
  };
  const load = Promise.all(Array.from({ length: HOSTS * LOOPS }, (_, k) => loop(Math.floor(k / LOOPS), k % LOOPS)));
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  /** After a kill at t0: the first acknowledged allocation sent after it, then one for every loop. */
  const measure = async (what: string, t0: number): Promise<{ firstMs: number; allMs: number }> => {
    const after = () => acks.filter((a) => a.sentAt >= t0);
    await waitFor(() => after().length > 0, { timeoutMs: RESTORE_WAIT_MS, intervalMs: 5, what: `the first allocation acknowledged after the ${what}` });
    const firstMs = Math.min(...after().map((a) => a.doneAt)) - t0;
    await step('every requester served again', () =>
      waitFor(() => new Set(after().map((a) => a.host * LOOPS + a.loop)).size === HOSTS * LOOPS, { timeoutMs: budget('every requester served again'), intervalMs: 10, what: `every requester served after the ${what}` }),
    );
    const perLoop = new Map<number, number>();
    for (const a of after()) perLoop.set(a.host * LOOPS + a.loop, Math.min(perLoop.get(a.host * LOOPS + a.loop) ?? Infinity, a.doneAt));
    return { firstMs, allMs: Math.max(...perLoop.values()) - t0 };
  };

  const restores: Restore[] = [];
  try {
    await sleep(STEADY_MS);
    expect(acks.length).toBeGreaterThan(0);

    // 1. The etcd raft leader dies (SIGKILL) and comes back with its data.
    const etcdVictim = await etcd.leader(5_000);
    const t1 = Date.now();
    await etcdVictim.kill();
    const m1 = await measure(`kill of etcd member ${etcdVictim.name} (raft leader)`, t1);
    await step('etcd member restart', () => etcdVictim.restart());
    restores.push({ part: 'etcd', what: 'etcd raft leader', victim: etcdVictim.name, ...m1, killedAt: t1, restartedAt: Date.now() });
    await sleep(STEADY_MS);

    // 2. The NATS server the leading controller is connected to dies (SIGKILL) and comes back with its store.
    const leader = await leaderName(5_000);
    const natsVictim = (await serverOf(`underlay-controller-${leader}`)) ?? nats.members[0]!;
    const streamLeader = await nats.streamLeader(EVENTS_STREAM);
    const t2 = Date.now();
    await natsVictim.kill();
    const m2 = await measure(`kill of NATS server ${natsVictim.name}`, t2);
    await step('NATS server restart', () => natsVictim.restart());
    restores.push({ part: 'NATS', what: `NATS server of leader ${leader}${streamLeader?.name === natsVictim.name ? ', stream leader' : ''}`, victim: natsVictim.name, ...m2, killedAt: t2, restartedAt: Date.now() });
    await step('stream replicas current again', () =>
      waitFor(
        async () => {
          const c = (await jsm.streams.info(EVENTS_STREAM)).cluster;
          return !!c?.leader && peersOf(c).length === 3 && (c.replicas ?? []).every((r) => r.name === c.leader || r.current);
        },
        { timeoutMs: budget('stream replicas current again'), intervalMs: 100, what: 'the event stream with a leader and two current replicas' },
      ),
    );
    await sleep(STEADY_MS);
  } finally {
    stop = true;
    await load;
  }
  const loadMs = Date.now() - loadStart;

  // --- figures -------------------------------------------------------------------------------------------------
  for (const r of restores) console.log(`restore after kill of ${r.victim} (${r.what}): first allocation acknowledged after ${r.firstMs} ms, every requester served after ${r.allMs} ms`);
  console.log(
    `load: ${acks.length} allocations acknowledged of ${requests} calls in ${loadMs} ms (${Math.round((acks.length * 1000) / loadMs)}/s), ${failures.length} calls failed`,
  );
  const byText = new Map<string, number>();
  for (const f of failures) byText.set(`${f.code}: ${f.text}`, (byText.get(`${f.code}: ${f.text}`) ?? 0) + 1);
  if (byText.size) console.log(`errors the requesters saw:\n${[...byText].map(([t, n]) => `  ${n} × ${t}`).join('\n')}`);
  const problems = restores.map((r) => ({ r, lines: controllerLines(r.killedAt - 50, r.restartedAt + 1_000) }));
  for (const r of restores) {
    const lines = controllerLines(r.killedAt - 50, r.restartedAt + 1_000, ['info', 'warn', 'error']);
    console.log(`the controllers' log from the kill of ${r.victim} (${r.what}) to its restart:\n${lines.map((l) => `  +${l.at - r.killedAt} ms ${l.who} ${l.level}: ${l.msg}`).join('\n') || '  (nothing)'}`);
  }

  // --- service restored within 5 s of each kill ----------------------------------------------------------------
  expect(restores).toHaveLength(2);
  for (const r of restores) expect({ kill: r.victim, firstMs: r.firstMs, withinBudget: r.firstMs <= RESTORE_MS }).toEqual({ kill: r.victim, firstMs: r.firstMs, withinBudget: true });

  // --- no duplicate, nothing acknowledged lost -----------------------------------------------------------------
  const addrs = acks.map((a) => a.address);
  expect(new Set(addrs).size).toBe(addrs.length);
  const log = new EtcdEventLog({ endpoints: etcd.endpoints });
  let head = 0;
  try {
    const events = await log.readAll();
    head = events.length;
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const pool = fold(events).pools.get(poolId)!;
    const lost = acks.filter((a) => pool.allocs.get(parseAddr(a.address.split('/')[0]!).value)?.seq !== a.allocSeq);
    expect(lost).toEqual([]);
  } finally {
    log.close();
  }
  // The replicated stream holds every event once (the publisher caught up after the NATS server came back).
  await step('stream catches up with the log', () =>
    waitFor(
      async () => {
        const s = (await jsm.streams.info(EVENTS_STREAM)).state;
        if (s.messages !== head) return false;
        const last = await jsm.streams.getMessage(EVENTS_STREAM, { seq: s.last_seq });
        return Number(last?.header?.get(headers.eventSeq)) === head;
      },
      { timeoutMs: budget('stream catches up with the log'), intervalMs: 100, what: `the event stream to hold the ${head} events of etcd's log, once each` },
    ),
  );

  // --- clear errors --------------------------------------------------------------------------------------------
  const unclear = (t: string) => /undefined|\[object Object\]|\n\s+at\s/.test(t);
  for (const f of failures) {
    expect({ text: f.text, unclear: unclear(f.text) }).toEqual({ text: f.text, unclear: false });
    expect(f.text).toMatch(/etcd|NATS|JetStream|controller/);
  }
  // During the etcd gap every warning names etcd; during the NATS gap each names the part it is about (a standby may
  // still be telling of etcd's election a moment before), and the leader's says it lost its NATS server.
  for (const { r, lines } of problems) {
    const names = r.part === 'etcd' ? /etcd/ : /NATS|JetStream|etcd/;
    for (const l of lines) {
      expect({ msg: l.msg, unclear: unclear(l.msg) }).toEqual({ msg: l.msg, unclear: false });
      expect({ gap: r.what, msg: l.msg, namesIt: names.test(l.msg) }).toEqual({ gap: r.what, msg: l.msg, namesIt: true });
    }
  }
  // The leader lost its NATS server: its log says so.
  const natsGap = problems.find((p) => p.r.part === 'NATS')!;
  expect(natsGap.lines.filter((l) => /^NATS: lost the connection to /.test(l.msg)).length).toBeGreaterThan(0);
});

it('the stream\'s replicas: put back to 3 by the leader when changed behind its back; 3 on a single nats-server is refused, saying why', async () => {
  expect([...controllers.values()].every((c) => c.proc.isRunning())).toBe(true);
  const admin = conns[0]!;
  const jsm = await jetstreamManager(admin);
  await jsm.streams.update(EVENTS_STREAM, { num_replicas: 1 });
  expect((await jsm.streams.info(EVENTS_STREAM)).config.num_replicas).toBe(1);
  const t0 = Date.now();
  await step('leader puts the stream back to 3 replicas', () =>
    waitFor(
      async () => {
        const i = await jsm.streams.info(EVENTS_STREAM);
        return i.config.num_replicas === 3 && peersOf(i.cluster).length === 3;
      },
      { timeoutMs: budget('leader puts the stream back to 3 replicas'), intervalMs: 100, what: 'the leader to update the stream back to 3 replicas' },
    ),
  );
  console.log(`the leader put the stream back to 3 replicas after ${Date.now() - t0} ms`);

  // A single server cannot keep 3 replicas: the controller does not start, and says what --events-replicas needs.
  const single = await startNats({ dir, name: 'nats-single' });
  try {
    const io = spawnCollecting(process.execPath, [CLI, 'controller', '--etcd', etcd.endpoints.join(','), '--nats', single.url, '--events-replicas', '3', '--listen', '127.0.0.1:0', '--name', 'c-single', '--log-format', 'json'], process.env);
    const code = await step('controller refuses 3 replicas on a single server', () => io.exited);
    expect({ code, err: io.err }).toEqual({ code: 1, err: expect.stringContaining(`could not create the JetStream stream ${EVENTS_STREAM} with 3 replicas`) });
    expect(io.err).toContain('--events-replicas 3 needs a NATS cluster with JetStream on at least 3 servers');
    expect(io.err).not.toMatch(/undefined|\n\s+at\s/);
  } finally {
    await single.stop();
  }
});

it('with NATS users on every server (each includes the file `underlay creds nats-config` writes), a controller with its credentials makes the stream with 3 replicas and a node with its own allocates', async () => {
  const keys = await initNatsKeys(path.join(dir, 'auth-keys'));
  const credsFile = (name: string, text: string) => {
    const f = path.join(dir, 'auth-keys', `${name}.creds`);
    writePrivateFile(f, text);
    return f;
  };
  const ctlCreds = credsFile('ca1', await controllerCreds(keys, 'ca1'));
  const nodeFile = credsFile('h1', await nodeCreds(keys, 'h1'));
  const [authNats, single] = await Promise.all([
    step('NATS cluster start', () => startNatsCluster({ dir, name: 'nats-auth', config: natsServerConfig(keys), timeoutMs: budget('NATS cluster start') })),
    startEtcd({ dir, name: 'etcd-auth' }),
  ]);
  try {
    await step('controllers start and elect a leader', async () => {
      await startController('ca1', [single.url], authNats.urls, ['--nats-creds', ctlCreds]);
      await leaderName(budget('controllers start and elect a leader'), ['ca1']);
    });
    const admin = await connectNats(authNats.urls, 'test-admin-auth', { creds: ctlCreds });
    conns.push(admin);
    const info = await (await jetstreamManager(admin)).streams.info(EVENTS_STREAM);
    expect(info.config.num_replicas).toBe(3);
    expect(peersOf(info.cluster)).toEqual(authNats.members.map((m) => m.name).sort());
    const nc = await connectNats(authNats.urls, 'test-node-h1', { creds: nodeFile, inboxPrefix: nodeInboxPrefix('h1') });
    conns.push(nc);
    const rpc = new RpcClient(nc, 'h1');
    const { poolId } = await rpc.call('requestPool', { node: 'h1', space: 'underlay', pool: '198.19.0.0/24', subPool: '', options: {}, v6: false }, RequestPoolRes);
    const a = await rpc.call('requestAddress', { node: 'h1', poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': mac(1) } }, RequestAddressRes);
    expect(a.address).toMatch(/^198\.19\.0\.\d+\/24$/);
  } finally {
    const c = controllers.get('ca1');
    if (c) await stopProcess(c.proc, 'SIGTERM', 5_000).catch(() => {});
    await Promise.all([authNats.stop(), single.stop()]);
  }
});
