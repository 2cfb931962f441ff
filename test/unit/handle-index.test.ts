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

  it('maps a handle held twice to its newest live holder, whether built before the release, after it, or half-way', () => {
    // MAC 1 gets an address, then asks for 10.1.9.9 by name under the same handle: two holders; then the newer goes.
    const t = poolWith(0);
    const { poolId } = t;
    for (let i = 0; i < 30; i++) t.run((s) => decideRequestAddress(s, { node: 'a', poolId, address: '', options: mac(500 + i) }));
    const first = t.run((s) => decideRequestAddress(s, { node: 'a', poolId, address: '', options: mac(1) })).address.split('/')[0]!;
    const before = restore(JSON.parse(JSON.stringify(snapshot(t.engine.state)))); // one holder, nothing built
    const mark = t.log.length;
    t.run((s) => decideRequestAddress(s, { node: 'a', poolId, address: '10.1.9.9', options: mac(1) }));
    t.run((s) => decideReleaseAddress(s, { node: 'a', poolId, address: '10.1.9.9' }));
    const events = t.log.slice(mark);
    const h = 'a/02:00:00:00:00:01';
    const value = (s: ClusterState) => poolOf(s, poolId).handles.get(h);
    const want = poolOf(t.engine.state, poolId).allocs.get(value(t.engine.state)!)?.seq;
    // Built all along (the engine's state): the older holder again.
    expect(t.engine.state.pools.get(poolId)!.allocs.get(value(t.engine.state)!)).toBeDefined();
    // Not built until after the events.
    const late = fold(events, restore(JSON.parse(JSON.stringify(snapshot(before)))));
    // Built before the events.
    const early = restore(JSON.parse(JSON.stringify(snapshot(before))));
    expect(value(early)).toBeDefined();
    fold(events, early);
    // Half-built: the build has not reached the first holder when the second comes and goes.
    const half = restore(JSON.parse(JSON.stringify(snapshot(before))));
    const steps = buildHandleIndexes(half, 5);
    steps.next();
    expect(poolOf(half, poolId).handles.built).toBe(false);
    fold(events, half);
    while (!steps.next().done);
    for (const s of [t.engine.state, late, early, half]) {
      expect(value(s)).toBeDefined();
      expect(poolOf(s, poolId).allocs.get(value(s)!)?.seq).toBe(want);
    }
    // It is the first address, and a retry without an address gets it back.
    const back = engineWithLog();
    back.engine.state = half;
    expect(back.run((s) => decideRequestAddress(s, { node: 'a', poolId, address: '', options: mac(1) })).address.split('/')[0]).toBe(first);
  });

  it('is built in slices across many small pools (one budget for all)', () => {
    const t = engineWithLog();
    for (let i = 0; i < 20; i++) {
      const { poolId } = t.run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: `10.2.${i}.0/24`, subPool: '', options: {}, v6: false }));
      for (let j = 0; j < 5; j++) t.run((s) => decideRequestAddress(s, { node: 'a', poolId, address: '', options: mac(j) }));
    }
    const restored = restore(JSON.parse(JSON.stringify(snapshot(t.engine.state))));
    let yields = 0;
    const steps = buildHandleIndexes(restored, 10);
    while (!steps.next().done) yields++;
    expect(yields).toBeGreaterThanOrEqual(9); // 100 allocations, 10 a slice
    for (const p of restored.pools.values()) expect(p.handles.built).toBe(true);
  });
});
