/**
 * Where a node's search for a free address in its own blocks may start: a cache beside the state, not part of it.
 *
 * `findInBlocks` (ipam/decide.ts) walks a node's blocks in claim order and takes the first that is not full. A node that
 * had filled hundreds of blocks walked all of them on every allocation (bench:ipam: findInBlocks grew from ~15 to
 * ~23 µs of ~320 µs per allocation during one run; 8 nodes, ~200 full blocks each). This keeps, per pool and node, a
 * claim seq below which every block of the node is full; the search starts at the first block claimed at or after it
 * (a node's blocks are in claim order, `claimedSeq` ascending). The fold lowers it whenever an address in one of the
 * node's blocks is freed (`noteFreed`): a block only gets room by a release (a claim adds a block after all others).
 *
 * Hand-written, and a WeakMap keyed by the Pool object rather than a field of it: a state loaded again (snapshot,
 * reload after a failed commit, clone) has new Pool objects and starts without a hint, which is correct (the search
 * starts at the first block, as before) and costs one full walk. Snapshots, state comparisons and the fold's result
 * never see it.
 */
import type { Pool } from './cluster-state.js';

const fullBefore = new WeakMap<Pool, Map<string, number>>();

/** Every block of `node` in `p` claimed before the seq returned is full (0: nothing known). */
export function openFrom(p: Pool, node: string): number {
  return fullBefore.get(p)?.get(node) ?? 0;
}

/** Records that every block of `node` in `p` claimed before `seq` is full. */
export function noteFullBefore(p: Pool, node: string, seq: number): void {
  let m = fullBefore.get(p);
  if (!m) fullBefore.set(p, (m = new Map()));
  m.set(node, seq);
}

/** An address in a block of `node` claimed at `claimedSeq` was freed: that block may have room again. */
export function noteFreed(p: Pool, node: string, claimedSeq: number): void {
  const m = fullBefore.get(p);
  const cur = m?.get(node);
  if (cur !== undefined && claimedSeq < cur) m!.set(node, claimedSeq);
}

/** The index in `blocks` (a node's blocks, claim order) of the first block claimed at or after `seq`. */
export function firstClaimedFrom(p: Pool, blocks: readonly bigint[], seq: number): number {
  let lo = 0;
  let hi = blocks.length;
  if (seq <= 0) return 0;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (p.blocks.get(blocks[mid]!)!.claimedSeq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
