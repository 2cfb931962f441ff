/**
 * The controller's write path (ClusterWriter and its GroupCommitter) on an in-memory event log whose appends can land
 * and be answered later, as an etcd transaction's answer can be on its way after the transaction is in the log: a
 * reload never drops a decision whose commit was in flight, and a refusal does not take this writer's own commit in
 * flight for another writer's. The real log (etcd) is covered by test/integration/controller-ipam.test.ts and ha.test.ts.
 */
import { decideNodeHello, decideRequestAddress, decideRequestPool, type ClusterEvent, type ClusterState, type Decision } from '@underlay/core';
import type { EtcdEventLog } from '@underlay/adapters';
import { ClusterWriter } from '@underlay/controller';

/** The log: appends land at once (the head moves); while `hold` is set, their answers wait for it. */
class HeldLog {
  readonly events: ClusterEvent[] = [];
  hold?: Promise<void>;
  async head(): Promise<number> {
    return this.events.length === 0 ? 0 : this.events[this.events.length - 1]!.seq;
  }
  async readAll(fromSeq = 1): Promise<ClusterEvent[]> {
    return this.events.filter((e) => e.seq >= fromSeq).map((e) => structuredClone(e));
  }
  async *read(fromSeq = 1): AsyncGenerator<ClusterEvent[]> {
    yield await this.readAll(fromSeq);
  }
  async append(events: ClusterEvent[], expectHead: number): Promise<void> {
    if ((await this.head()) !== expectHead) throw new Error(`head is ${await this.head()}, not ${expectHead}`);
    this.events.push(...events.map((e) => structuredClone(e)));
    if (this.hold) await this.hold;
  }
}

const ctx = { actor: 'node:a' };
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
let macs = 0;

async function setUp(): Promise<{ log: HeldLog; w: ClusterWriter; poolId: string; taken: string; alloc: () => Promise<{ address: string }> }> {
  const log = new HeldLog();
  const w = new ClusterWriter({ log: log as unknown as EtcdEventLog });
  await w.load();
  const run = <R>(d: (s: ClusterState) => Decision<R>) => w.run(d, ctx);
  await run((st) => decideNodeHello(st, { node: 'a', address: '198.51.100.1' }));
  const { poolId } = await run((st) => decideRequestPool(st, { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }));
  const alloc = () => run((st) => decideRequestAddress(st, { node: 'a', poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': `02:00:00:00:00:${(++macs).toString(16).padStart(2, '0')}` } }));
  const taken = (await alloc()).address.split('/')[0]!;
  return { log, w, poolId, taken, alloc };
}

/** The addresses the writer's state holds, and those in the log (folded by a fresh writer). */
async function addresses(w: ClusterWriter, log: HeldLog): Promise<{ state: string[]; logged: string[] }> {
  const of = (s: ClusterState) => [...s.pools.values()].flatMap((p) => [...p.allocs.values()].filter((a) => a.kind === 'endpoint').map((a) => a.seq)).map(String).sort();
  const fresh = new ClusterWriter({ log: log as unknown as EtcdEventLog });
  await fresh.load();
  return { state: of(w.state), logged: of(fresh.state) };
}

describe('ClusterWriter: commits in flight', () => {
  it('a refusal while its own commit is in flight keeps every decision in the state', async () => {
    const { log, w, poolId, taken, alloc } = await setUp();
    let release!: () => void;
    log.hold = new Promise<void>((r) => (release = r));
    const a = alloc(); // lands in the log, answered later
    while ((await log.head()) === w.committedSeq) await tick(1);
    log.hold = undefined;
    const c = alloc();
    while (w.state.seq === (await log.head())) await tick(1); // c decided, its commit queued behind a's
    // b asks for an address in use: a refusal, with the log's head past the committed seq (a's answer on its way).
    const b = w.run((st) => decideRequestAddress(st, { node: 'a', poolId, address: taken, options: { 'com.docker.network.endpoint.macaddress': '02:00:00:00:01:01' } }), ctx);
    await tick(30);
    release();
    await expect(a).resolves.toBeDefined();
    await expect(c).resolves.toBeDefined();
    await expect(b).rejects.toThrow(/in use|allocated|taken/i);
    const { state, logged } = await addresses(w, log);
    expect(logged).toHaveLength(3);
    expect(state).toEqual(logged);
  });

  it('a reload asked while commits are in flight waits for them: the state it loads holds them', async () => {
    const { log, w, alloc } = await setUp();
    let release!: () => void;
    log.hold = new Promise<void>((r) => (release = r));
    const a = alloc();
    while ((await log.head()) === w.committedSeq) await tick(1);
    log.hold = undefined;
    const c = alloc();
    while (w.state.seq === (await log.head())) await tick(1); // c decided, its commit queued behind a's
    const reloaded = w.reload();
    // Nothing is decided on the old state once the reload is asked: this one waits for the reload.
    const d = alloc();
    await tick(30);
    release();
    await Promise.all([a, c, reloaded, d]);
    const { state, logged } = await addresses(w, log);
    expect(logged).toHaveLength(4);
    expect(state).toEqual(logged);
  });
});
