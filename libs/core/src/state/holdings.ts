/**
 * Whether a node holds anything in a pool: a reference (its Docker holds the pool), a block, or an address (in its own
 * block or borrowed from another node's). The agent's view follows the chains of the pools its host holds something
 * in (when it starts and when it would leave a pool), and the controller answers every head check with them (`held`):
 * all three ask this one rule (they had three: the controller's left borrowed addresses out).
 *
 * Addresses are counted per node beside the state, in a WeakMap keyed by the Pool object (as open-blocks.ts does, and
 * hand-written for the same reasons): the first question about a pool counts its allocations once, and the fold keeps
 * the count from then on (`noteAllocated`, `noteReleased`). The controller answers a head check from every agent every
 * 2 s; a scan of a 1M-address pool for each was not an option. A state loaded again (snapshot, reload, clone) has new
 * Pool objects and counts again when first asked.
 */
import type { Pool } from './cluster-state.js';

const counts = new WeakMap<Pool, Map<string, number>>();

function countsOf(p: Pool): Map<string, number> {
  let m = counts.get(p);
  if (!m) {
    m = new Map();
    for (const a of p.allocs.values()) m.set(a.node, (m.get(a.node) ?? 0) + 1);
    counts.set(p, m);
  }
  return m;
}

/** `p`'s allocations were put in without the fold (a snapshot's section read later): count them again when asked. */
export function forgetCounts(p: Pool): void {
  counts.delete(p);
}

/** The fold allocated an address of `p` to `node`. */
export function noteAllocated(p: Pool, node: string): void {
  const m = counts.get(p);
  if (m) m.set(node, (m.get(node) ?? 0) + 1);
}

/** The fold released an address of `p` that `node` held. */
export function noteReleased(p: Pool, node: string): void {
  const m = counts.get(p);
  if (!m) return;
  const n = (m.get(node) ?? 0) - 1;
  if (n > 0) m.set(node, n);
  else m.delete(node);
}

/** `node` holds a reference, a block or an address in `p`. */
export function holdsIn(p: Pool, node: string): boolean {
  return p.refs.has(node) || (p.nodeBlocks.get(node)?.length ?? 0) > 0 || countsOf(p).has(node);
}
