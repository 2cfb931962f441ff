/**
 * The hint that lets a node's search for a free address skip its full blocks (libs/core/src/state/open-blocks.ts) is
 * a cache: every decision made with it must be the decision made without it (a copy of the state has no hint).
 */
import { cloneState, decideReleaseAddress, decideRequestAddress, decideRequestPool, type ClusterState } from '@underlay/core';
import { engineWithClock } from './support';

/** A small deterministic generator (the same sequence on every run). */
function lcg(seed: number) {
  let s = seed;
  return (n: number) => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s % n;
  };
}

describe("a node's search for a free address in its own blocks", () => {
  it.each([1, 2, 3])('decides what the same state without the hint decides, through fills and releases (seed %i)', (seed) => {
    const t = engineWithClock();
    const poolId = t.run((s: ClusterState) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '10.0.0.0/22', subPool: '', options: { block_size: '29' }, v6: false })).poolId;
    const rnd = lcg(seed);
    const held = new Map<string, { address: string; allocSeq: number }[]>();
    let releases = 0;
    let reusedEarlierBlock = 0;
    for (let step = 0; step < 900; step++) {
      const node = ['a', 'b', 'c'][rnd(3)]!;
      const mine = held.get(node) ?? [];
      held.set(node, mine);
      if (mine.length > 8 && rnd(5) < 2) {
        const [x] = mine.splice(rnd(mine.length), 1);
        t.run((s: ClusterState) => decideReleaseAddress(s, { node, poolId, address: x!.address, allocSeq: x!.allocSeq }), `node:${node}`);
        releases++;
        continue;
      }
      const req = { node, poolId, address: '', options: {} };
      const without = decideRequestAddress(cloneState(t.engine.state), req).result.address;
      const blocksBefore = t.engine.state.pools.get(poolId)!.nodeBlocks.get(node)?.length ?? 0;
      const got = t.run((s: ClusterState) => decideRequestAddress(s, req), `node:${node}`);
      expect(got.address).toBe(without);
      const p = t.engine.state.pools.get(poolId)!;
      const own = p.nodeBlocks.get(node)!;
      const v = [...p.allocs.entries()].find(([, a]) => a.seq === got.allocSeq)![0];
      // The address came from a block that is not the node's newest: a block that had room again after a release.
      if (own.length === blocksBefore && own.length > 1 && own.indexOf(own.find((b) => v >= b && v < b + 8n)!) < own.length - 1) reusedEarlierBlock++;
      mine.push({ address: got.address.split('/')[0]!, allocSeq: got.allocSeq });
    }
    // The run exercised what the hint must get right: releases in full blocks, then reuse of those blocks.
    expect(releases).toBeGreaterThan(50);
    expect(reusedEarlierBlock).toBeGreaterThan(10);
  });
});
