/**
 * A pool's handle index (libs/core/src/state/handle-index.ts) is derived from its allocations and built only when
 * asked: a restored state starts without it, the fold keeps it right without building it, a build in slices with
 * the fold in between ends where a build at once would, and a repeated request still gets its address back.
 */
import { buildHandleIndexes, cloneState, decideReleaseAddress, decideRequestAddress, decideRequestPool, fold, restore, snapshot, type ClusterState, type Pool } from '@underlay/core';
import { engineWithLog } from './support';

const mac = (n: number) => ({ 'com.docker.network.endpoint.macaddress': `02:00:00:00:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}` });

/** A pool with `n` endpoint addresses of node a (MAC n each), and the log that made it. */
function poolWith(n: number) {
  const t = engineWithLog();
  const { poolId } = t.run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '10.1.0.0/16', subPool: '', options: {}, v6: false }));
  const addresses: string[] = [];
  for (let i = 0; i < n; i++) addresses.push(t.run((s) => decideRequestAddress(s, { node: 'a', poolId, address: '', options: mac(i) })).address);
  return { ...t, poolId, addresses };
}

const poolOf = (s: ClusterState, id: string): Pool => s.pools.get(id)!;
/** What an index built at once from the allocations holds. */
const fromAllocs = (p: Pool) => [...p.allocs].filter(([, a]) => a.handle !== undefined).map(([v, a]) => [a.handle, v]);

describe('handle index', () => {
  it('is not built in a restored state or a copy until asked, and then holds the folded handles', () => {
    const t = poolWith(50);
    const folded = poolOf(t.engine.state, t.poolId);
    expect(folded.handles.built).toBe(true); // a state folded from the start built it as it went
    const restored = restore(JSON.parse(JSON.stringify(snapshot(t.engine.state))));
    const p = poolOf(restored, t.poolId);
    const copy = poolOf(cloneState(restored), t.poolId);
    expect(p.handles.built).toBe(false);
    expect(copy.handles.built).toBe(false);
    expect(p.handles.get('a/02:00:00:00:00:07')).toBe(folded.handles.get('a/02:00:00:00:00:07'));
    expect(p.handles.built).toBe(true);
    expect([...p.handles]).toEqual([...folded.handles]);
    expect([...copy.handles]).toEqual([...folded.handles]);
  });

  it('is kept right by the fold without being built, and a repeated request gets its address back', () => {
    const t = poolWith(20);
    const restored = restore(JSON.parse(JSON.stringify(snapshot(t.engine.state))));
    const rest = poolWith(0); // a second engine to decide on the restored state
    rest.engine.state = restored;
    // Release MAC 3's address and allocate MAC 100: folded, not built.
    rest.run((s) => decideReleaseAddress(s, { node: 'a', poolId: t.poolId, address: t.addresses[3]!.split('/')[0]! }));
    const got = rest.run((s) => decideRequestAddress(s, { node: 'a', poolId: t.poolId, address: '', options: mac(100) }));
    const p = poolOf(restored, t.poolId);
    // The decision asked the index (MAC 100 is a handle): built on that request, with the release already in it.
    expect(p.handles.built).toBe(true);
    expect(p.handles.get('a/02:00:00:00:00:03')).toBeUndefined();
    // Repeated: the same address, no new allocation.
    const again = rest.run((s) => decideRequestAddress(s, { node: 'a', poolId: t.poolId, address: '', options: mac(100) }));
    expect(again.address).toBe(got.address);
    expect([...p.handles]).toEqual(fromAllocs(p));
  });

  it('built a slice at a time with the fold in between, ends as a build at once would', () => {
    const t = poolWith(40);
    const restored = restore(JSON.parse(JSON.stringify(snapshot(t.engine.state))));
    const p = poolOf(restored, t.poolId);
    const steps = buildHandleIndexes(restored, 7);
    steps.next();
    steps.next(); // 14 of 40 indexed
    expect(p.handles.built).toBe(false);
    // Events folded meanwhile: a release of an address already indexed, one not yet indexed, and a new allocation.
    const more = engineWithLog();
    more.engine.state = cloneState(t.engine.state);
    more.run((s) => decideReleaseAddress(s, { node: 'a', poolId: t.poolId, address: t.addresses[2]!.split('/')[0]! }));
    more.run((s) => decideReleaseAddress(s, { node: 'a', poolId: t.poolId, address: t.addresses[30]!.split('/')[0]! }));
    more.run((s) => decideRequestAddress(s, { node: 'a', poolId: t.poolId, address: '', options: mac(200) }));
    fold(more.log, restored);
    while (!steps.next().done);
    expect(p.handles.built).toBe(true);
    expect(new Map(p.handles)).toEqual(new Map(fromAllocs(p) as [string, bigint][]));
    expect(p.handles.get('a/02:00:00:00:00:02')).toBeUndefined();
    expect(p.handles.get('a/02:00:00:00:00:1e')).toBeUndefined();
    expect(p.handles.get(`a/02:00:00:00:00:c8`)).toBeDefined();
    expect(p.handles.size).toBe(39);
  });
});
