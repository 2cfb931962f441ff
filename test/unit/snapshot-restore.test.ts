/**
 * Restoring a version 2 snapshot (libs/core/src/state/snapshot.ts): the allocation chunks' columns are checked by
 * their shape and then entry by entry as they are read (not by zod's copy of every number), so a damaged snapshot
 * is refused, naming the chunk, and a good one restores the state that wrote it.
 */
import { decideRequestAddress, decideRequestPool, describe as describeState, restore, restorePoolAllocs, snapshot, snapshotHeadRanges, snapshotJsonParts, type SnapshotSection } from '@underlay/core';
import { engineWithLog } from './support';

function stateWithAllocations() {
  const { run, engine } = engineWithLog();
  const p = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '198.51.100.0/24', subPool: '', options: {}, v6: false }));
  for (let i = 0; i < 5; i++) {
    const options = { 'com.docker.network.endpoint.macaddress': `02:00:00:00:00:0${i}` };
    run((s) => decideRequestAddress(s, { node: i % 2 ? 'a' : 'b', poolId: p.poolId, address: '', options }));
  }
  return engine.state;
}

/** The snapshot as JSON.parse gives it, its first chunk changed by `f`. */
function damaged(f: (chunk: Record<string, unknown>) => void): unknown {
  const raw = JSON.parse(JSON.stringify(snapshot(stateWithAllocations())));
  f(raw.pools[0].allocs[0]);
  return raw;
}

describe('restoring a snapshot', () => {
  it('gives back the state that wrote it', () => {
    const state = stateWithAllocations();
    expect(describeState(restore(JSON.parse(JSON.stringify(snapshot(state)))))).toEqual(describeState(state));
  });

  it.each([
    ['a column missing', (c: Record<string, unknown>) => delete c.t, /not an allocation chunk/],
    ['a text column that is not text', (c: Record<string, unknown>) => (c.a = 7), /not an allocation chunk/],
    ['a seq column that is not an array', (c: Record<string, unknown>) => (c.s = '1,2'), /not an allocation chunk/],
    ['a node table holding a number', (c: Record<string, unknown>) => (c.nt = [1]), /not an allocation chunk/],
    ['a text column with a value too few', (c: Record<string, unknown>) => (c.t = (c.t as string).split(',').slice(1).join(',')), /column .*#0\.t holds/],
    ['seqs and kinds of different lengths', (c: Record<string, unknown>) => (c.k = (c.k as string).slice(1)), /columns of different lengths/],
    ['a node index given as text', (c: Record<string, unknown>) => ((c.n as unknown[])[0] = '0'), /allocation 0 of chunk .*#0 is invalid/],
    ['a node index past its table', (c: Record<string, unknown>) => ((c.n as number[])[1] = 9), /allocation 1 of chunk .*#0 is invalid/],
    ['a network index that is not whole', (c: Record<string, unknown>) => ((c.w as number[])[2] = 0.5), /allocation 2 of chunk .*#0 is invalid/],
    ['an unknown kind', (c: Record<string, unknown>) => (c.k = `x${(c.k as string).slice(1)}`), /allocation 0 of chunk .*#0 is invalid/],
    ['no seqs but other columns with values', (c: Record<string, unknown>) => (c.s = []), /columns of different lengths/],
    ['no entries but a text column with values', (c: Record<string, unknown>) => Object.assign(c, { s: [], k: '', n: [], w: [] }), /columns of different lengths/],
    ['a seq that is not a number', (c: Record<string, unknown>) => ((c.s as unknown[])[3] = null), /allocation 3 of chunk .*#0 is invalid/],
  ])('refuses a chunk with %s', (_what, change, message) => {
    expect(() => restore(damaged(change))).toThrow(message);
  });

  it('refuses a damaged chunk in a pool section read alone (an agent’s view), as in the whole snapshot', () => {
    const sections: SnapshotSection[] = [];
    const json = [...snapshotJsonParts(stateWithAllocations(), undefined, sections)].join('');
    const s = sections[0]!;
    const head = restore(JSON.parse(snapshotHeadRanges(json.length, sections).map(([a, b]) => json.slice(a, b)).join('')));
    const chunk = JSON.parse(json.slice(s.start, s.end));
    chunk.n[0] = '0';
    expect(() => restorePoolAllocs(head.pools.get(s.poolId)!, JSON.stringify(chunk))).toThrow(/allocation 0 of chunk .*#0 is invalid/);
    delete chunk.t;
    expect(() => restorePoolAllocs(head.pools.get(s.poolId)!, JSON.stringify(chunk))).toThrow(/not an allocation chunk/);
  });
});
