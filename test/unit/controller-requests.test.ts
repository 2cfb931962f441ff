/**
 * The controller's request modules (ipam-requests.ts, network-records.ts, node-registration.ts) on an in-memory
 * writer: each request runs its decision through the writer, a dry run decides for its refusal only, and the
 * pool limits reach the decisions. The real write path (etcd, group commit, publish) is covered by
 * test/integration/controller-ipam.test.ts.
 */
import { CLUSTER_CHAIN, ClusterEngine, hostChain, type ClusterState, type Decision } from '@underlay/core';
import { IpamRequests, NetworkRecords, NodeRegistration, type ClusterWriter } from '@underlay/controller';

/** What the modules use of ClusterWriter, on a ClusterEngine: every run is committed at once. */
function memoryWriter(): Pick<ClusterWriter, 'run' | 'check' | 'committedSeq' | 'state'> & { engine: ClusterEngine; runs: number } {
  const engine = new ClusterEngine();
  return {
    engine,
    runs: 0,
    async run<R>(decide: (s: ClusterState) => Decision<R>, ctx: { actor: string }): Promise<R> {
      this.runs++;
      return engine.execute(decide, ctx).result;
    },
    async check(decide: (s: ClusterState) => unknown): Promise<void> {
      decide(engine.state);
    },
    get committedSeq() {
      return engine.state.seq;
    },
    get state() {
      return engine.state;
    },
  };
}

const ctx = { actor: 'node:h1' };

describe('controller request modules', () => {
  it('IPAM requests run the ipam decisions with the controller pool limits', async () => {
    const w = memoryWriter();
    const ipam = new IpamRequests(w, { maxPoolPrefixV4: 16, maxPoolPrefixV6: 48 });
    await expect(ipam.requestPool({ node: 'h1', space: 'underlay', pool: '10.0.0.0/8', subPool: '', options: {}, v6: false }, ctx)).rejects.toThrow(/larger than the limit \/16/);
    const p = await ipam.requestPool({ node: 'h1', space: 'underlay', pool: '10.1.0.0/16', subPool: '', options: {}, v6: false }, ctx);
    const a = await ipam.requestAddress({ node: 'h1', poolId: p.poolId, address: '', options: {} }, ctx);
    expect(w.engine.state.pools.get(p.poolId)!.allocs.size).toBe(1);
    await ipam.releaseAddress({ node: 'h1', poolId: p.poolId, address: a.address.split('/')[0]!, allocSeq: a.allocSeq }, ctx);
    expect(w.engine.state.pools.get(p.poolId)!.allocs.size).toBe(0);
  });

  it('network records: record and name a host network, remove it (a dry run decides nothing)', async () => {
    const w = memoryWriter();
    const nets = new NetworkRecords(w);
    const id = 'a'.repeat(64);
    await nets.networkRecord({ node: 'h1', networkId: id, poolIds: [], options: {} }, ctx);
    expect(await nets.networkName({ node: 'h1', networkId: id, name: 'n1', replica: false }, ctx)).toEqual({ member: false, seq: 2, chains: { c: 0, 'h.h1': 2 } });
    expect(w.engine.state.networks.get(id)?.name).toBe('n1');
    const seq = w.engine.state.seq;
    const runs = w.runs;
    expect(await nets.networkRemove({ networkId: id, node: 'h1', dryRun: true }, ctx)).toEqual({});
    expect(w.engine.state.seq).toBe(seq);
    expect(w.runs).toBe(runs);
    // Only the node that recorded it may remove it, dry run or not.
    await expect(nets.networkRemove({ networkId: id, node: 'h2', dryRun: true }, ctx)).rejects.toThrow(/recorded by node h1, not h2/);
    // The answer: the seq, and the heads of the chains h1's replica reconcile reads (its host's: the removal).
    expect(await nets.networkRemove({ networkId: id, node: 'h1' }, ctx)).toEqual({ seq: seq + 1, chains: { [CLUSTER_CHAIN]: 0, [hostChain('h1')]: seq + 1 } });
    expect(w.engine.state.networks.has(id)).toBe(false);
  });

  it('node registration registers a node from its report, once', async () => {
    const w = memoryWriter();
    const reg = new NodeRegistration(w);
    const report = { node: 'h1', address: '198.51.100.1', endpoints: [], endpointStates: [], networkStates: [] };
    expect(await reg.nodeReport(report, ctx)).toEqual({});
    expect(w.engine.state.nodes.get('h1')?.address).toBe('198.51.100.1');
    const seq = w.engine.state.seq;
    await reg.nodeReport(report, ctx);
    expect(w.engine.state.seq).toBe(seq);
  });
});
