/**
 * Leader election on a real etcd: one leader among three, fencing of event-log appends by the
 * leader key's create revision, failover within 3 s after a kill -9 of a leader process, quick
 * step-down when the lease is revoked behind the leader's back, and a partitioned leader giving up
 * before etcd can hand the key to a standby.
 */
import * as child_process from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import { Etcd3 } from 'etcd3';
import { EtcdEventLog, CommitConflictError, type Fence } from '@underlay/adapters';
import type { ClusterEvent } from '@underlay/core';
import { ElectionStoppedError, LEADER_KEY, LeaderElection, type LeaderElectionOptions } from '../../services/controller/src/leader';
import { startEtcd, type EtcdService } from '../lab/services';

jest.setTimeout(120_000);

const ROOT = path.resolve(__dirname, '../..');
const now = (): number => performance.now();

let dir: string;
let etcd: EtcdService;
let leaderJs: string;
let fixtureJs: string;
const clients: Etcd3[] = [];
const elections: LeaderElection[] = [];
const children: child_process.ChildProcess[] = [];
const proxies: BlackholeProxy[] = [];
/** Every election's log lines, with timestamps; printed when a bounded wait fails. */
const logLines: string[] = [];

// --- helpers ------------------------------------------------------------------------------------

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}\n--- election log ---\n${logLines.slice(-60).join('\n')}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function newClient(url = etcd.url): Etcd3 {
  const c = new Etcd3({ hosts: url, dialTimeout: 3_000 });
  clients.push(c);
  return c;
}

function newElection(name: string, key: string, client: Etcd3 = newClient(), extra: Partial<LeaderElectionOptions> = {}): LeaderElection {
  const t0 = now();
  const e = new LeaderElection({ client, name, key, logger: (m) => logLines.push(`${(now() - t0).toFixed(0).padStart(6)} ms [${name}] ${m}`), ...extra });
  elections.push(e);
  return e;
}

/** A campaign promise that never causes an unhandled rejection (stop() rejects pending ones). */
function campaignOf(e: LeaderElection): Promise<Fence> {
  const p = e.campaign();
  p.catch(() => undefined);
  return p;
}

function event(seq: number): ClusterEvent {
  return { seq, id: crypto.randomUUID(), time: new Date().toISOString(), actor: 'controller', type: 'NodeRegistered', data: { node: `leader-test-${seq}` } };
}

/** A TCP proxy that can stop forwarding (both directions) without closing anything: a network partition. */
class BlackholeProxy {
  private readonly server = net.createServer((c) => this.accept(c));
  private readonly pairs: [net.Socket, net.Socket][] = [];
  private blocked = false;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return `http://127.0.0.1:${this.port}`;
  }

  private accept(c: net.Socket): void {
    c.on('error', () => undefined);
    if (this.blocked) {
      c.pause();
      this.pairs.push([c, c]);
      return;
    }
    const u = net.connect(this.target.port, this.target.host);
    u.on('error', () => undefined);
    c.pipe(u);
    u.pipe(c);
    this.pairs.push([c, u]);
  }

  block(): void {
    this.blocked = true;
    for (const [c, u] of this.pairs) {
      c.unpipe(u);
      u.unpipe(c);
      c.pause();
      u.pause();
    }
  }

  async close(): Promise<void> {
    for (const [c, u] of this.pairs) {
      c.destroy();
      u.destroy();
    }
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

interface LeaderChild {
  child: child_process.ChildProcess;
  fence: Fence;
  stderr: () => string;
}

/** Runs the compiled module in its own `node` process; resolves once it printed "LEADER <createRevision>". */
function spawnLeaderChild(name: string, key: string): Promise<LeaderChild> {
  const child = child_process.spawn(process.execPath, [fixtureJs, leaderJs, etcd.url, name, key], {
    env: { ...process.env, NODE_PATH: path.join(ROOT, 'node_modules') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return within(
    new Promise<LeaderChild>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /^LEADER (\d+)$/m.exec(out);
        if (m) resolve({ child, fence: { key, createRevision: m[1]! }, stderr: () => err });
      });
      child.once('exit', (code, sig) => reject(new Error(`leader child ${name} exited (${code ?? sig}) before being elected:\n${err}`)));
      child.once('error', reject);
    }),
    15_000,
    `child ${name} (pid ${child.pid}) to print LEADER; stderr so far:\n${err}`,
  );
}

function killChild(c: child_process.ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  process.kill(c.pid!, 'SIGKILL');
  return within(exited, 5_000, `pid ${c.pid} to exit after SIGKILL`);
}

// --- setup -------------------------------------------------------------------------------------

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-leader-'));
  // Throws (and so fails every test in this file) when etcd is not installed.
  etcd = await startEtcd({ dir });

  // The module under test, transpiled alone (no dependence on the rest of the workspace building).
  const src = fs.readFileSync(path.join(ROOT, 'services/controller/src/leader.ts'), 'utf8');
  const out = ts.transpileModule(src, {
    fileName: 'leader.ts',
    reportDiagnostics: true,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  });
  if (out.diagnostics?.length) throw new Error(`transpiling leader.ts failed: ${ts.flattenDiagnosticMessageText(out.diagnostics[0]!.messageText, '\n')}`);
  leaderJs = path.join(dir, 'leader.js');
  fs.writeFileSync(leaderJs, out.outputText);
  fixtureJs = path.join(dir, 'leader-child.js');
  fs.writeFileSync(
    fixtureJs,
    `'use strict';
const { Etcd3 } = require('etcd3');
const [leaderJs, url, name, key] = process.argv.slice(2);
const { LeaderElection } = require(leaderJs);
const client = new Etcd3({ hosts: url, dialTimeout: 3000 });
const el = new LeaderElection({ client, name, key, logger: (m) => process.stderr.write('[' + name + '] ' + m + '\\n') });
el.onLost((reason) => process.stdout.write('LOST ' + reason + '\\n'));
el.campaign().then(
  (f) => process.stdout.write('LEADER ' + f.createRevision + '\\n'),
  (e) => { process.stderr.write(String(e && e.stack || e) + '\\n'); process.exit(2); },
);
setInterval(() => {}, 1 << 30); // sleep until killed
`,
  );
});

afterAll(async () => {
  if (process.env.LEADER_TEST_LOG) console.log(logLines.join('\n'));
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  for (const p of proxies) await p.close().catch(() => undefined);
  await Promise.all(elections.map((e) => within(e.stop(), 8_000, 'election stop').catch(() => undefined)));
  for (const c of clients) c.close();
  await etcd?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

// --- tests -------------------------------------------------------------------------------------

describe('leader election on real etcd', () => {
  it('elects exactly one of three candidates, names it, and hands over at once on resign', async () => {
    const key = '/underlay/test/leader-three';
    const els = ['alpha', 'bravo', 'charlie'].map((n) => newElection(n, key));
    const campaigns = els.map(campaignOf);
    const first = await within(Promise.race(campaigns.map((p, i) => p.then(() => i))), 10_000, 'a first leader');
    await sleep(500); // room for a second (wrong) winner to show up
    expect(els.filter((e) => e.isLeader()).map((e) => e.name)).toEqual([els[first]!.name]);
    for (const e of els) expect(await e.currentLeader()).toBe(els[first]!.name);
    expect(els[first]!.fence()?.key).toBe(key);

    // Resigning deletes the key; a standby learns it from its watch and takes over without polling.
    const rest = els.filter((_, i) => i !== first);
    const restCampaigns = campaigns.filter((_, i) => i !== first);
    const t0 = now();
    await els[first]!.stop();
    expect(els[first]!.isLeader()).toBe(false);
    const second = await within(Promise.race(restCampaigns.map((p, i) => p.then(() => i))), 5_000, 'a second leader');
    const handover = now() - t0;
    console.log(`resign → next leader: ${handover.toFixed(0)} ms`);
    expect(handover).toBeLessThan(1_000);
    await sleep(300);
    expect(rest.filter((e) => e.isLeader()).map((e) => e.name)).toEqual([rest[second]!.name]);
    expect(await rest[1 - second]!.currentLeader()).toBe(rest[second]!.name);

    // Stopping a candidate that is still waiting rejects its campaign.
    await rest[1 - second]!.stop();
    await expect(restCampaigns[1 - second]).rejects.toBeInstanceOf(ElectionStoppedError);
    await rest[second]!.stop();
    expect(await rest[second]!.currentLeader()).toBeUndefined();
  });

  it('fences appends: the old leader fence fails after a takeover even with the right head', async () => {
    const key = '/underlay/test/leader-fence';
    const client = newClient();
    const log = new EtcdEventLog(client);
    const a = newElection('fence-a', key);
    const b = newElection('fence-b', key);
    const fa = await within(a.campaign(), 10_000, 'fence-a elected');
    const pb = campaignOf(b);

    let head = await log.head();
    await log.append([event(head + 1)], head, fa);
    head++;

    await a.stop();
    const fb = await within(pb, 5_000, 'fence-b elected');
    expect(fb.createRevision).not.toBe(fa.createRevision);
    expect(BigInt(fb.createRevision)).toBeGreaterThan(BigInt(fa.createRevision));

    await expect(log.append([event(head + 1)], head, fa)).rejects.toBeInstanceOf(CommitConflictError);
    expect(await log.head()).toBe(head);
    await log.append([event(head + 1)], head, fb);
    head++;
    expect(await log.head()).toBe(head);
    await b.stop();
    // With nobody holding the key, no fence works.
    await expect(log.append([event(head + 1)], head, fb)).rejects.toBeInstanceOf(CommitConflictError);
  });

  it('fails over within 3 s after kill -9 of the leader process, and the dead leader is fenced off (3 rounds)', async () => {
    const key = LEADER_KEY;
    const client = newClient();
    const log = new EtcdEventLog(client);
    const times: number[] = [];
    for (let round = 1; round <= 3; round++) {
      const dead = await spawnLeaderChild(`child-${round}`, key);
      let head = await log.head();
      await log.append([event(head + 1)], head, dead.fence); // its fence works while it lives
      head++;

      const standby = newElection(`standby-${round}`, key);
      const pending = campaignOf(standby);
      await sleep(300);
      expect(standby.isLeader()).toBe(false);
      expect(await standby.currentLeader()).toBe(`child-${round}`);

      const t0 = now();
      await killChild(dead.child);
      const fence = await within(pending, 10_000, `standby-${round} to take over after SIGKILL`);
      const dt = now() - t0;
      times.push(dt);
      expect(dead.child.signalCode).toBe('SIGKILL');
      expect(dt).toBeLessThanOrEqual(3_000);
      expect(BigInt(fence.createRevision)).toBeGreaterThan(BigInt(dead.fence.createRevision));
      expect(await standby.currentLeader()).toBe(`standby-${round}`);

      await expect(log.append([event(head + 1)], head, dead.fence)).rejects.toBeInstanceOf(CommitConflictError);
      await log.append([event(head + 1)], head, fence);
      await standby.stop(); // leaves the key free for the next round's child
    }
    console.log(`kill -9 → standby elected: ${times.map((t) => `${t.toFixed(0)} ms`).join(', ')}`);
  });

  it('notices a lease revoked behind its back quickly, stops being leader, and can campaign again', async () => {
    const key = '/underlay/test/leader-revoke';
    const other = newClient();
    const a = newElection('revoke-a', key);
    const fa = await within(a.campaign(), 10_000, 'revoke-a elected');
    const reasons: string[] = [];
    const lost = new Promise<number>((resolve) =>
      a.onLost((r) => {
        reasons.push(r);
        resolve(now());
      }),
    );
    const kv = (await other.get(key).exec()).kvs[0]!;
    expect(kv.value.toString()).toBe('revoke-a');
    expect(kv.create_revision).toBe(fa.createRevision);

    const t0 = now();
    await other.leaseClient.leaseRevoke({ ID: kv.lease });
    const at = await within(lost, 3_000, 'onLost after the revoke');
    console.log(`lease revoked → onLost: ${(at - t0).toFixed(0)} ms (${reasons[0]})`);
    expect(at - t0).toBeLessThan(1_000);
    expect(a.isLeader()).toBe(false);
    expect(a.fence()).toBeUndefined();
    expect(await other.get(key).string()).toBeNull();
    await sleep(1_500); // the lease's own 'lost' follows the watch's delete: still one call
    expect(reasons).toHaveLength(1);

    const again = await within(a.campaign(), 10_000, 'revoke-a elected again');
    expect(BigInt(again.createRevision)).toBeGreaterThan(BigInt(fa.createRevision));
    expect(a.isLeader()).toBe(true);
    await a.stop();
  });

  it('a partitioned leader steps down before etcd can elect a standby', async () => {
    const key = '/underlay/test/leader-partition';
    const proxy = new BlackholeProxy({ host: '127.0.0.1', port: etcd.port });
    proxies.push(proxy);
    const viaProxy = newClient(await proxy.start());
    const a = newElection('partitioned', key, viaProxy);
    const b = newElection('standby', key);
    await within(a.campaign(), 10_000, 'partitioned elected');
    let lostAt = 0;
    let leaderWhenLost: boolean | undefined;
    a.onLost(() => {
      lostAt = now();
      leaderWhenLost = a.isLeader();
    });
    const pb = campaignOf(b);
    await sleep(1_000); // a few keepalives go through
    expect(a.isLeader()).toBe(true);

    const t0 = now();
    proxy.block();
    await within(pb, 10_000, 'standby elected after the partition');
    const electedAt = now();
    console.log(`partition → old leader stepped down: ${(lostAt - t0).toFixed(0)} ms, standby elected: ${(electedAt - t0).toFixed(0)} ms`);
    expect(lostAt).toBeGreaterThan(0);
    expect(lostAt).toBeLessThan(electedAt);
    expect(lostAt - t0).toBeLessThan(2_000); // 0.9 of the 2 s TTL after the last answered keepalive was sent
    expect(leaderWhenLost).toBe(false);
    expect(a.isLeader()).toBe(false);
    expect(electedAt - t0).toBeLessThanOrEqual(3_000);
    await b.stop();
  });
});
