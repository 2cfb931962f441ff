/**
 * ReplicaReconciler (services/node-agent/src/driver/replicas.ts) on fakes: a cluster network missing here is created
 * through Docker; a create that fails waits its own backoff (passes triggered meanwhile leave it alone) and the
 * runner comes back when that wait ends, without waiting for the periodic pass. The real Docker side is
 * test/e2e/cluster-networks.
 */
import type { ClusterNetwork, ClusterState } from '@underlay/core';
import type { DriverContext } from '../../services/node-agent/src/driver/context';
import { ReplicaReconciler } from '../../services/node-agent/src/driver/replicas';
import { DriverMemory } from '../../services/node-agent/src/driver/context';

const net = (name: string, createdSeq = 1): ClusterNetwork =>
  ({
    name,
    createdSeq,
    time: '2026-01-01T00:00:00Z',
    actor: 'api',
    definition: { type: 'macvlan', ipv6: false, internal: false, options: {}, labels: {}, ipamOptions: {}, subnets: [] },
  }) as unknown as ClusterNetwork;

function setup(intervalMs: number, retryMs?: number) {
  const created: { name: string; at: number }[] = [];
  const tries: { name: string; at: number }[] = [];
  let failing = new Set<string>();
  // Networks of these names appear in Docker (made by someone else) just as this agent's create fails.
  let racing = new Set<string>();
  const logs: string[] = [];
  const others: { Name: string; Id: string; Driver: string }[] = [];
  const docker = {
    async inspectNetwork(idOrName: string) {
      return others.find((n) => n.Name === idOrName || n.Id === idOrName);
    },
    // Lists what it created (as networks not recorded here yet: the reconciler leaves those alone).
    async listNetworks() {
      return created.map((c) => ({ Name: c.name, Id: `id-${c.name}`, Driver: 'underlay' }));
    },
    async createNetwork(body: { Name: string }) {
      tries.push({ name: body.Name, at: Date.now() });
      if (racing.has(body.Name)) {
        others.push({ Name: body.Name, Id: `other-${body.Name}`, Driver: 'bridge' });
        throw new Error(`Error response from daemon: network with name ${body.Name} already exists`);
      }
      if (failing.has(body.Name)) throw new Error(`driver refused ${body.Name}: network ${body.Name} already exists with a different definition`);
      created.push({ name: body.Name, at: Date.now() });
      return `id-${body.Name}-${'0'.repeat(12)}`;
    },
    async deleteNetwork() {
      return true;
    },
  };
  const ctx = {
    node: 'h1',
    docker,
    store: { networks: new Map() },
    links: { getLink: async () => ({ name: 'eth0' }) },
    log: (m: string) => logs.push(m),
    parentMap: {},
    conflicts: new Map(),
    memory: new DriverMemory(),
  } as unknown as DriverContext;
  const state = { seq: 1, networks: new Map(), clusterNetworks: new Map<string, ClusterNetwork>() };
  // The chains read through (interest-based delivery): `covers` as ClusterView answers it.
  const readThrough: Record<string, number> = {};
  const view = {
    state: state as unknown as ClusterState,
    isReady: true,
    covers: (seq: number, chains: Readonly<Record<string, number>>) =>
      Object.keys(chains).length === 0 ? state.seq >= seq : Object.entries(chains).every(([c, head]) => (readThrough[c] ?? 0) >= head),
  };
  const r = new ReplicaReconciler(ctx, view, intervalMs, retryMs === undefined ? undefined : { minMs: retryMs, maxMs: retryMs * 4 });
  return { r, ctx, state, readThrough, created, tries, logs, fail: (names: string[]) => (failing = new Set(names)), race: (names: string[]) => (racing = new Set(names)) };
}

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((res) => setTimeout(res, 5));
  }
};

describe('ReplicaReconciler', () => {
  let stop: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await stop?.();
    stop = undefined;
  });

  it('creates missing replicas at start and on trigger', async () => {
    const t = setup(60_000);
    stop = () => t.r.stop();
    t.state.clusterNetworks.set('a', net('a'));
    t.r.start();
    await until(() => t.created.length === 1);
    t.state.clusterNetworks.set('b', net('b'));
    t.r.trigger();
    await until(() => t.created.length === 2);
    t.r.trigger();
    await t.r.idle();
    expect(t.created.map((c) => c.name)).toEqual(['a', 'b']);
  });

  it('does not create again a cluster network whose local network Docker is removing (hidden, its record still here)', async () => {
    const t = setup(60_000);
    stop = () => t.r.stop();
    // Network id-a of cluster network a: recorded here and named in the cluster, but Docker no longer lists it
    // (dockerd hides a network it is removing before it calls DeleteNetwork).
    (t.ctx.store.networks as Map<string, unknown>).set('id-a', { id: 'id-a', parent: 'eth0', poolIds: [] });
    t.state.networks.set('id-a', { networkId: 'id-a', node: 'h1', poolIds: [], options: {}, name: 'a', cluster: true });
    t.state.clusterNetworks.set('a', net('a'));
    t.r.start();
    await new Promise((res) => setTimeout(res, 50));
    await t.r.idle();
    expect(t.tries).toEqual([]);
    // DeleteNetwork is done: the record is gone, but the cluster still has the network (the removal was refused for
    // the cluster, say): the replica is created.
    (t.ctx.store.networks as Map<string, unknown>).delete('id-a');
    t.r.trigger();
    await until(() => t.created.length === 1);
  });

  it("after a removal this agent caused, waits until the view read each chain the controller named through its head (not only the highest seq folded)", async () => {
    const t = setup(60_000);
    stop = () => t.r.stop();
    // The removal (seq 10) answered chain heads: the host chain's event at 10, the cluster chain's last at 9. The view
    // folded seq 12 from a pool chain, but has read the cluster chain only through 5: the removal of cluster network a
    // is not folded yet, and creating it again would bring back what `docker network rm` removed.
    t.ctx.memory.changeRecorded(10, { c: 9, 'h.h1': 10 });
    t.state.seq = 12;
    Object.assign(t.readThrough, { c: 5, 'h.h1': 10 });
    t.state.clusterNetworks.set('a', net('a'));
    t.r.start();
    await new Promise((res) => setTimeout(res, 50));
    await t.r.idle();
    expect(t.tries).toEqual([]);
    // The cluster chain read through its head (the removal refused for the cluster, say: a is still there): created.
    t.readThrough.c = 9;
    t.r.trigger();
    await until(() => t.created.length === 1);
  });

  it("keeps a network it just named while the view has read the host chain's NetworkNamed but not the cluster chain's ClusterNetworkCreated", async () => {
    const t = setup(60_000);
    stop = () => t.r.stop();
    const deleted: string[] = [];
    Object.assign(t.ctx.docker, {
      listNetworks: async () => [{ Name: 'mb', Id: 'id-mb', Driver: 'underlay' }],
      deleteNetwork: async (id: string) => (deleted.push(id), true),
    });
    // `docker network create mb` on this host: recorded, then named; the controller made it cluster network mb (seq 7,
    // chain c) and named it (seq 8, chain h.h1). The view folded the host chain through 8, the cluster chain through 5.
    (t.ctx.store.networks as Map<string, unknown>).set('id-mb', { id: 'id-mb', parent: 'eth0', poolIds: [] });
    t.state.networks.set('id-mb', { networkId: 'id-mb', node: 'h1', poolIds: [], options: {}, name: 'mb', cluster: true });
    Object.assign(t.readThrough, { c: 5, 'h.h1': 8 });
    // 1. The controller's answer is still on its way.
    let answer!: (r: { member: boolean; seq: number; chains: Record<string, number> }) => void;
    const sent = t.ctx.memory.define('id-mb', () => new Promise((res) => (answer = res)));
    t.r.start();
    await new Promise((res) => setTimeout(res, 50));
    await t.r.idle();
    expect(deleted).toEqual([]);
    // 2. Answered (heads c 7, h.h1 8); the cluster chain is not read through 7 yet.
    answer({ member: true, seq: 8, chains: { c: 7, 'h.h1': 8 } });
    await sent;
    t.r.trigger();
    await t.r.idle();
    expect(deleted).toEqual([]);
    expect(t.tries).toEqual([]);
    // 3. Read through: the cluster network is there, the network stays.
    t.readThrough.c = 7;
    t.state.clusterNetworks.set('mb', net('mb', 7));
    t.r.trigger();
    await t.r.idle();
    expect(deleted).toEqual([]);
    // 4. Removed from the cluster later (another host's `docker network rm`): now it goes.
    t.state.clusterNetworks.delete('mb');
    t.readThrough.c = 9;
    t.r.trigger();
    await until(() => deleted.length === 1);
    expect(deleted).toEqual(['id-mb']);
  });

  it("sends again a name whose answer never came (the controller may have recorded it), and waits for that answer's heads", async () => {
    const t = setup(60_000);
    stop = () => t.r.stop();
    const deleted: string[] = [];
    const named: string[] = [];
    const memory = t.ctx.memory;
    Object.assign(t.ctx, {
      controller: { networkName: async (req: { networkId: string }) => (named.push(req.networkId), { member: true, seq: 8, chains: { c: 7, 'h.h1': 8 } }) },
    });
    const mb = { Name: 'mb', Id: 'id-mb', Driver: 'underlay', Options: { parent: 'eth0' }, IPAM: { Driver: 'underlay', Config: [{ Subnet: '198.51.100.0/24' }] }, Labels: {} };
    Object.assign(t.ctx.docker, {
      listNetworks: async () => [mb],
      inspectNetwork: async () => mb,
      deleteNetwork: async (id: string) => (deleted.push(id), true),
    });
    (t.ctx.store.networks as Map<string, unknown>).set('id-mb', { id: 'id-mb', parent: 'eth0', poolIds: [] });
    // The controller recorded the name (the view read it on the host chain), but its answer was lost.
    t.state.networks.set('id-mb', { networkId: 'id-mb', node: 'h1', poolIds: [], options: {}, name: 'mb', cluster: true });
    await expect(memory.define('id-mb', () => Promise.reject(new Error('deadline')))).rejects.toThrow('deadline');
    Object.assign(t.readThrough, { c: 5, 'h.h1': 8 });
    t.r.start();
    await until(() => named.length === 1);
    await t.r.idle();
    expect(memory.defineFailed('id-mb')).toBe(false);
    expect(memory.awaitChains).toEqual({ c: 7, 'h.h1': 8 });
    expect(deleted).toEqual([]);
    // The cluster chain read through its head and the cluster network is there: the network stays.
    t.readThrough.c = 7;
    t.state.clusterNetworks.set('mb', net('mb', 7));
    t.r.trigger();
    await t.r.idle();
    expect(deleted).toEqual([]);
  });

  it('retries a failed create after its own backoff (not on every trigger), then clears its error', async () => {
    const retryMs = 300;
    // The periodic pass never comes within the test: only the requeue for the replica's wait brings the retry.
    const t = setup(60_000, retryMs);
    stop = () => t.r.stop();
    t.fail(['a']);
    t.state.clusterNetworks.set('a', net('a'));
    t.r.start();
    await until(() => t.tries.length === 1);
    expect(t.r.status.lastError.get('a')).toMatchObject({ state: 'error' });
    // Passes triggered during the wait leave the failing replica alone.
    for (let i = 0; i < 3; i++) {
      t.r.trigger();
      await t.r.idle();
    }
    expect(t.tries).toHaveLength(1);
    t.fail([]);
    await until(() => t.created.length === 1, 3000);
    const waited = t.created[0]!.at - t.tries[0]!.at;
    expect(waited).toBeGreaterThanOrEqual(retryMs * 0.8 - 5);
    expect(waited).toBeLessThan(retryMs * 5);
    expect(t.r.status.lastError.has('a')).toBe(false);
  });

  it('leaves a network Docker shows after its create failed (made meanwhile), and records a refusal whatever its text', async () => {
    const t = setup(60_000, 60_000);
    stop = () => t.r.stop();
    t.race(['a']);
    t.fail(['b']);
    t.state.clusterNetworks.set('a', net('a'));
    t.state.clusterNetworks.set('b', net('b'));
    t.r.start();
    await until(() => t.tries.length === 2);
    await t.r.idle();
    // 'a' exists in Docker now: nothing to report. 'b' was refused (its text says "already exists" too): an error.
    expect(t.r.status.lastError.has('a')).toBe(false);
    expect(t.r.status.lastError.get('b')).toMatchObject({ state: 'error', detail: expect.stringContaining('different definition') });
    expect(t.logs.some((l) => l.includes('could not create cluster network a'))).toBe(false);
  });
});
