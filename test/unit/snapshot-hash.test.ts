/**
 * The checksums a snapshot is written with (libs/adapters/src/etcd/snapshots.ts: SnapshotHasher), taken a part at a
 * time as the parts are stored: they must be the checksums of the whole text, of each pool's section and of the text
 * outside the sections (what cold start and agents check), whatever the cuts.
 */
import { createHash } from 'node:crypto';
import { SnapshotHasher, snapshotCuts } from '@underlay/adapters';
import { snapshotHeadRanges } from '@underlay/core';

const sha = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

/** A snapshot-like text: ASCII structure, non-ASCII values, an emoji (a surrogate pair) and sections to match. */
function text(): { json: string; sections: { poolId: string; start: number; end: number }[] } {
  const pieces = ['{"version":2,"nodes":[{"node":"hôte-1"}],"pools":[', '{"def":{"poolId":"p1"},"allocs":[', '{"a":"c612","t":"🚀 launch"},{"a":"c613"}', '],"blocks":[]},{"def":{"poolId":"p2"},"allocs":[', '', '],"blocks":[]},{"def":{"poolId":"p3"},"allocs":[', '{"a":"ff","h":"naïve,𝒳"}', ']}]}'];
  const sections: { poolId: string; start: number; end: number }[] = [];
  let at = 0;
  pieces.forEach((p, i) => {
    if (i % 2 === 0 && i > 0) sections.push({ poolId: `p${i / 2}`, start: at, end: at + p.length });
    at += p.length;
  });
  return { json: pieces.join(''), sections };
}

describe('snapshot checksums taken part by part', () => {
  it.each([1, 3, 4, 7, 64, 1 << 20])('equal those of the whole text, its sections and its head (parts of at most %i bytes)', (max) => {
    const { json, sections } = text();
    expect(sections.map((s) => s.end - s.start > 0)).toEqual([true, false, true]); // one empty section
    const cuts = snapshotCuts(json, max);
    const h = new SnapshotHasher(json.length, sections);
    let at = 0;
    cuts.forEach((end, i) => {
      // As the writer feeds it (the part's UTF-8 given), and without the bytes.
      h.add(json, at, end, i % 2 ? Buffer.from(json.slice(at, end), 'utf8') : undefined);
      at = end;
    });
    expect(h.sha256()).toBe(sha(json));
    const index = h.index(cuts);
    expect(index.cuts).toEqual(cuts);
    expect(index.pools).toEqual(sections.map((s) => ({ ...s, sha256: sha(json.slice(s.start, s.end)) })));
    expect(index.head).toBe(sha(snapshotHeadRanges(json.length, sections).map(([a, b]) => json.slice(a, b)).join('')));
  });

  it('without sections, gives the whole text’s checksum and no index', () => {
    const { json } = text();
    const h = new SnapshotHasher(json.length);
    h.add(json, 0, 5);
    h.add(json, 5, json.length);
    expect(h.sha256()).toBe(sha(json));
    expect(() => h.index([json.length])).toThrow(/no index/);
  });

  it('refuses ranges out of order, and answers only once all the text was fed', () => {
    const { json, sections } = text();
    const h = new SnapshotHasher(json.length, sections);
    h.add(json, 0, 10);
    expect(() => h.add(json, 11, 20)).toThrow(/does not follow 10/);
    expect(() => h.sha256()).toThrow(/not fed/);
    expect(() => new SnapshotHasher(json.length, [sections[1]!, sections[0]!])).toThrow(/out of order/);
  });
});
