/**
 * One rule for "this node holds something in this pool" (libs/core/src/state/holdings.ts): a reference, a block or an
 * address, borrowed ones included. The agent's view follows such pools and the controller names them in every head
 * check's `held`. Addresses are counted beside the state and kept by the fold: every answer must equal the answer on
 * a fresh copy of the state (which counts again).
 */
import { cloneState, decideReleaseAddress, decideRequestAddress, decideRequestPool, holdsIn, type ClusterState } from '@underlay/core';
import { engineWithClock } from './support';

const mac = (n: number) => ({ 'com.docker.network.endpoint.macaddress': `02:00:00:00:01:${n.toString(16).padStart(2, '0')}` });

describe('holdsIn', () => {
  it('counts a reference, a block and a borrowed address, and follows releases after the first question', () => {
    const t = engineWithClock();
    const run = <R>(d: (s: ClusterState) => { events: unknown[]; result: R }, node: string) => t.run(d as never, `node:${node}`) as R;
    const id = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/28', subPool: '', options: { block_size: '29' }, v6: false }), 'a').poolId;
    const addr = (node: string, n: number) => run((s) => decideRequestAddress(s, { node, poolId: id, address: '', options: mac(n) }), node);
    const pool = () => t.engine.state.pools.get(id)!;
    const answers = (nodes: string[]) => nodes.map((n) => holdsIn(pool(), n));
    const fresh = (nodes: string[]) => {
      const copy = cloneState(t.engine.state).pools.get(id)!;
      return nodes.map((n) => holdsIn(copy, n));
    };
    const nodes = ['a', 'b', 'c'];
    // a holds the reference; nobody else anything (and the counts are made now, before any address exists).
    expect(answers(nodes)).toEqual([true, false, false]);
    const a = [1, 2, 3, 4, 5, 6, 7].map((n) => addr('a', n)); // a's block 192.0.2.0/29, full
    const b = addr('b', 20); // b claims 192.0.2.8/29: a block, no reference
    expect(answers(nodes)).toEqual([true, true, false]);
    // c has no reference and no block left to claim: it borrows from b's block. An address is a holding too.
    const c = addr('c', 30);
    expect(c.address.startsWith('192.0.2.')).toBe(true);
    expect(pool().nodeBlocks.has('c')).toBe(false);
    expect(answers(nodes)).toEqual([true, true, true]);
    expect(fresh(nodes)).toEqual(answers(nodes));
    // c's only address goes: c holds nothing (the count the first question made follows the release).
    run((s) => decideReleaseAddress(s, { node: 'c', poolId: id, address: c.address.split('/')[0]!, allocSeq: c.allocSeq }), 'c');
    expect(answers(nodes)).toEqual([true, true, false]);
    expect(fresh(nodes)).toEqual(answers(nodes));
    // b's address goes; its block stays claimed (an empty block is released later): b still holds the block.
    run((s) => decideReleaseAddress(s, { node: 'b', poolId: id, address: b.address.split('/')[0]!, allocSeq: b.allocSeq }), 'b');
    expect(answers(nodes)).toEqual([true, true, false]);
    for (const x of a) run((s) => decideReleaseAddress(s, { node: 'a', poolId: id, address: x.address.split('/')[0]!, allocSeq: x.allocSeq }), 'a');
    expect(answers(nodes)).toEqual([true, true, false]);
    expect(fresh(nodes)).toEqual(answers(nodes));
  });
});
