/**
 * etcd with client TLS (certificates required) and users, as controllers use it: a controller with the CA, its
 * client certificate and a user works (allocations, restart); clients without the certificate, with a wrong
 * password or without a user are refused with a clear error; a password file others can read is refused. Then
 * etcd is unreachable for 30 s (SIGSTOP, SIGCONT): requests meanwhile fail with a clear `unavailable` error within
 * the deadline (measured), the controller recovers by itself, and no address is handed out twice (every address
 * an agent got is held by exactly that allocation in the state folded from etcd).
 */
import { labFactor } from '../lab/budget';
import { waitFor as labWaitFor } from '../lab/wait';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Controller, ControllerConfig, type ControllerConfigInput } from '@underlay/controller';
import { EtcdEventLog, connectNats, type EtcdClientOptions, type NatsConnection } from '@underlay/adapters';
import { describe as describeState, fold, RequestAddressRes, RequestPoolRes, UnderlayError, type ClusterEvent } from '@underlay/core';
import { startNats, type NatsService } from '../lab/services';
import { startSecureEtcd, type SecureEtcd } from '../lab/etcd-auth';
import { makePki } from '../lab/pki';
import { AnyNodeRpc, mac } from './support';

jest.setTimeout(180_000);

const DEADLINE_MS = 5_000; // the default --etcd-timeout-ms
/** Room for scheduling, NATS and the reply on top of the deadline (scaled by this machine's factor, test/lab/budget.ts). */
const MARGIN_MS = 1_500 * labFactor();

let dir: string;
let sec: SecureEtcd;
let nats: NatsService;
let nc: NatsConnection;
let rpc: AnyNodeRpc;
const controllers: Controller[] = [];
const logs = new Map<string, string[]>();

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-etcdsec-'));
  [sec, nats] = await Promise.all([startSecureEtcd({ dir }), startNats({ dir })]);
  nc = await connectNats(nats.url, 'etcd-security-test');
  rpc = new AnyNodeRpc(nc);
});
afterAll(async () => {
  for (const c of controllers) await c.stop().catch(() => {});
  await nc?.close().catch(() => {});
  await Promise.all([sec?.etcd.stop(), nats?.stop()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** The controller's etcd flags: the CA, its client certificate and key, the user and its password file. */
const secure = (): Partial<ControllerConfigInput> => ({
  etcd: [sec.etcd.url],
  etcdCa: sec.pki.caFile,
  etcdCert: sec.client.certFile,
  etcdKey: sec.client.keyFile,
  etcdUser: sec.user,
  etcdPasswordFile: sec.passwordFile,
});
const clientTls = () => ({ ca: sec.pki.ca, cert: sec.client.cert, key: sec.client.key });

function controller(name: string, extra: Partial<ControllerConfigInput> = {}): Controller {
  const lines: string[] = [];
  logs.set(name, lines);
  const log = (m: string) => {
    lines.push(m);
    if (process.env.UNDERLAY_TEST_LOG) process.stderr.write(`${new Date().toISOString()} ${name}: ${m}\n`);
  };
  const c = new Controller(
    { etcd: [sec.etcd.url], nats: nats.url, listen: '127.0.0.1:0', name, collectIntervalMs: 3_600_000, ...secure(), ...extra },
    log,
  );
  controllers.push(c);
  return c;
}

async function leaderWithin(c: Controller, ms: number): Promise<number> {
  const t0 = Date.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    c.whenLeader(),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${c.config.name} not leader within ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
  return Date.now() - t0;
}

interface Got {
  node: string;
  poolId: string;
  address: string;
  allocSeq: number;
  k: number;
}
const got: Got[] = [];
let poolId = '';
let nextMac = 0;

async function allocate(node: string, opts: { deadlineMs?: number; timeoutMs?: number } = {}): Promise<Got> {
  const k = nextMac++;
  const r = await rpc.call('requestAddress', { node, poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': mac(k) } }, RequestAddressRes, opts);
  const g = { node, poolId, address: r.address.split('/')[0]!, allocSeq: r.allocSeq, k };
  got.push(g);
  return g;
}

/** Reads the whole log with a good client and folds it. */
async function readLog(): Promise<ClusterEvent[]> {
  const log = new EtcdEventLog({ endpoints: [sec.etcd.url], tls: clientTls(), auth: { username: sec.user, password: sec.password } });
  try {
    return await log.readAll();
  } finally {
    log.close();
  }
}

/** No address handed out twice: every address an agent got is held by that very allocation, and none twice in the log. */
async function expectNoDuplicates(): Promise<void> {
  const events = await readLog();
  const held = new Map<string, number>();
  for (const e of events) {
    if (e.type === 'AddressAllocated') {
      const key = `${e.data.poolId} ${e.data.address}`;
      expect(held.has(key) ? `${key} allocated at ${e.seq} while held by ${held.get(key)}` : '').toBe('');
      held.set(key, e.seq);
    } else if (e.type === 'AddressReleased') {
      const key = `${e.data.poolId} ${e.data.address}`;
      if (held.get(key) === e.data.allocSeq) held.delete(key);
    }
  }
  const addrs = got.map((g) => g.address);
  expect(new Set(addrs).size).toBe(addrs.length);
  const state = describeState(fold(events)) as { pools: { poolId: string; allocs: { address: string; seq: number; node: string }[] }[] };
  const allocs = new Map(state.pools.flatMap((p) => p.allocs.map((a) => [`${p.poolId} ${a.address}`, a] as const)));
  for (const g of got) expect(allocs.get(`${g.poolId} ${g.address}`)).toMatchObject({ seq: g.allocSeq, node: g.node });
}

it('a controller with TLS and an etcd user allocates, and a restarted one goes on from the same state', async () => {
  const c1 = controller('c1');
  await c1.start();
  await leaderWithin(c1, 20_000);
  poolId = (await rpc.call('requestPool', { node: 'h1', space: 'underlay', pool: '10.99.0.0/16', subPool: '', options: {}, v6: false }, RequestPoolRes)).poolId;
  for (const node of ['h1', 'h2', 'h3']) for (let i = 0; i < 10; i++) await allocate(node);
  await c1.writer.settled();
  const before = JSON.stringify(describeState(c1.writer.state));
  await c1.stop();

  const c2 = controller('c2');
  await c2.start();
  await leaderWithin(c2, 20_000);
  expect(JSON.stringify(describeState(c2.writer.state))).toBe(before);
  for (const node of ['h1', 'h2', 'h3']) await allocate(node);
  await expectNoDuplicates();
});

it('refuses clients without the certificate, with a wrong password, or without a user; and a password file others can read', async () => {
  const url = sec.etcd.url;
  const other = await makePki(path.join(dir, 'other-ca'), 'another-ca');
  const stranger = await other.issue('stranger', { cn: 'underlay-client', client: true });
  const cases: [string, EtcdClientOptions, RegExp][] = [
    ['no client certificate', { endpoints: [url], tls: { ca: sec.pki.ca }, auth: { username: sec.user, password: sec.password } }, /cannot connect/],
    ['a certificate of another CA', { endpoints: [url], tls: { ca: sec.pki.ca, cert: stranger.cert, key: stranger.key }, auth: { username: sec.user, password: sec.password } }, /cannot connect/],
    ['plain http', { endpoints: [url.replace('https:', 'http:')], auth: { username: sec.user, password: sec.password } }, /cannot connect/],
    ['a wrong password', { endpoints: [url], tls: clientTls(), auth: { username: sec.user, password: `${sec.password}x` } }, /authentication refused .*authentication failed, invalid user ID or password/],
    ['no user', { endpoints: [url], tls: clientTls() }, /permission denied/],
  ];
  for (const [what, o, re] of cases) {
    const log = new EtcdEventLog(o);
    const t0 = Date.now();
    try {
      const err = await log.head().then(
        () => new Error(`${what}: etcd answered`),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(UnderlayError);
      expect((err as UnderlayError).code).toBe('unavailable');
      expect((err as Error).message).toMatch(new RegExp(`^etcd at ${(o.endpoints[0] ?? '').replace(/[.:/]/g, '\\$&')}: `));
      expect((err as Error).message).toMatch(re);
      expect(Date.now() - t0).toBeLessThan(DEADLINE_MS + MARGIN_MS);
      console.log(`${what}: refused in ${Date.now() - t0} ms: ${(err as Error).message}`);
    } finally {
      log.close();
    }
  }
  // Positive control: the same client with the certificate and the right password is served.
  const ok = new EtcdEventLog({ endpoints: [url], tls: clientTls(), auth: { username: sec.user, password: sec.password } });
  expect(await ok.head()).toBeGreaterThan(0);
  ok.close();

  // A controller with a wrong password never leads, and says why.
  const badPw = path.join(dir, 'bad-password');
  fs.writeFileSync(badPw, 'not-the-password\n', { mode: 0o600 });
  const cBad = controller('c-badpw', { etcdPasswordFile: badPw, name: 'c-badpw' });
  await cBad.start();
  await labWaitFor(() => logs.get('c-badpw')!.some((l) => /authentication refused/.test(l)), { timeoutMs: 30_000, what: 'the controller with a wrong password to log "authentication refused"' });
  expect(cBad.role).not.toBe('leader');
  expect(cBad.terms).toBe(0);
  await cBad.stop();

  // A password file others can read is refused before anything starts.
  const open = path.join(dir, 'open-password');
  fs.writeFileSync(open, `${sec.password}\n`);
  fs.chmodSync(open, 0o644);
  expect(() => controller('c-open', { etcdPasswordFile: open })).toThrow(`--etcd-password-file: ${open} may be read or written by group or others (mode 0644); a password file must be private: chmod 600 ${open}`);
  // Flags that need each other, and the deadline's bounds.
  const base = { etcd: [url], nats: nats.url };
  expect(ControllerConfig.safeParse({ ...base, etcdUser: 'u' }).error?.issues[0]?.message).toBe('etcd authentication needs both --etcd-user and --etcd-password-file');
  expect(ControllerConfig.safeParse({ ...base, etcdCert: 'c.pem' }).error?.issues[0]?.message).toBe('an etcd client certificate needs both --etcd-cert and --etcd-key');
  expect(ControllerConfig.safeParse({ ...base, etcdTimeoutMs: 50 }).success).toBe(false);
  expect(ControllerConfig.safeParse({ ...base, etcdTimeoutMs: 3_000_000 }).success).toBe(false);
  expect(ControllerConfig.parse(base).etcdTimeoutMs).toBe(DEADLINE_MS);
});

it('etcd unreachable for 30 s: requests fail with a clear unavailable error within the deadline, the controller recovers, no duplicates', async () => {
  const c = controllers.find((x) => x.config.name === 'c2')!;
  expect(c.role).toBe('leader');
  for (const node of ['h1', 'h2']) await allocate(node);
  const api = `http://${c.httpAddress!.host}:${c.httpAddress!.port}`;
  const timings: string[] = [];

  const t0 = Date.now();
  process.kill(sec.etcd.pid, 'SIGSTOP');
  try {
    // 1. A request at once reaches the leader, whose commit gets no answer: the etcd deadline's error comes back.
    const first = await allocate('h3', { deadlineMs: 1, timeoutMs: 20_000 }).then(
      () => new Error('allocated while etcd was stopped'),
      (e: unknown) => e,
    );
    const firstMs = Date.now() - t0;
    timings.push(`request at once: failed after ${firstMs} ms: ${(first as Error).message}`);
    expect((first as UnderlayError).code).toBe('unavailable');
    expect((first as Error).message).toMatch(new RegExp(`^etcd at ${sec.etcd.url.replace(/[.:/]/g, '\\$&')}: did not answer within ${DEADLINE_MS} ms \\(txn append events \\d+\\.\\.\\d+\\)`));
    expect(firstMs).toBeLessThanOrEqual(DEADLINE_MS + MARGIN_MS);

    // 2. Reads of the HTTP API (any controller answers them from etcd) end with 503 and the etcd error.
    const t1 = Date.now();
    const res = await fetch(`${api}/v1/events?since=0&limit=1`, { headers: { authorization: `Bearer ${c.apiToken}` }, signal: AbortSignal.timeout(20_000) });
    const body = (await res.json()) as { error?: { code: string; message: string } };
    const readMs = Date.now() - t1;
    timings.push(`GET /v1/events: ${res.status} after ${readMs} ms: ${body.error?.message}`);
    expect(res.status).toBe(503);
    expect(body.error).toMatchObject({ code: 'unavailable' });
    // Either its own deadline, or (the last calls having timed out) the client's circuit breaker answers at once.
    expect(body.error!.message).toMatch(
      /^etcd at https:\/\/127\.0\.0\.1:\d+: (did not answer within 5000 ms|not reachable: its last calls failed or timed out; the client tries again within 1 s) \(range \/underlay\/v1\/events\/0000000000000001… limit 1\)$/,
    );
    expect(readMs).toBeLessThanOrEqual(DEADLINE_MS + MARGIN_MS);

    // 3. Meanwhile the leader stepped down (no keepalive answered): requests fail as unavailable within the caller's deadline.
    for (const at of [10_000, 20_000]) {
      await new Promise((r) => setTimeout(r, Math.max(0, t0 + at - Date.now())));
      const t2 = Date.now();
      const e = await allocate('h1', { deadlineMs: 3_000, timeoutMs: 2_000 }).then(
        () => new Error('allocated while etcd was stopped'),
        (x: unknown) => x,
      );
      const ms = Date.now() - t2;
      timings.push(`request at ${Math.round((t2 - t0) / 1000)} s: failed after ${ms} ms: ${(e as Error).message}`);
      expect((e as UnderlayError).code).toBe('unavailable');
      expect(ms).toBeLessThanOrEqual(3_000 + MARGIN_MS);
    }
    expect(c.role).not.toBe('leader');
    await new Promise((r) => setTimeout(r, Math.max(0, t0 + 30_000 - Date.now())));
  } finally {
    process.kill(sec.etcd.pid, 'SIGCONT');
  }
  const tBack = Date.now();
  timings.push(`etcd stopped for ${tBack - t0} ms`);

  // 4. Recovery: the controller leads again by itself and allocates.
  const leadMs = await leaderWithin(c, 30_000);
  const ok = await allocate('h3', { deadlineMs: 30_000 });
  timings.push(`after SIGCONT: leader again in ${leadMs} ms, first allocation after ${Date.now() - tBack} ms (${ok.address})`);
  for (const node of ['h1', 'h2', 'h3']) for (let i = 0; i < 5; i++) await allocate(node);
  await c.writer.settled();
  console.log(timings.join('\n'));
  await expectNoDuplicates();
});
