/**
 * Leak rules. An endpoint address is a leak candidate when
 *  - it was never bound to an endpoint within the grace period after its allocation, or
 *  - its node's latest report (received well after the binding) does not list its endpoint, or
 *  - its node has not been seen for a long time (lease expired long ago).
 * A candidate is reclaimed only when seen as leaked on two consecutive passes, so a live address
 * caught by a race in one pass is never reclaimed; for the report rule, the second sighting must come from a newer
 * report than the first (passes faster than reports would otherwise count one late report twice). An address that its node's latest report shows
 * held by a container (Docker's own view, read by the agent) is never a candidate for the first two
 * rules, whatever the agent's local store lost. Pure: the caller passes the clock and what it knows
 * of the nodes.
 */
import type { EventBody } from '../state/events.js';
import { formatValue, tryParseAddr } from '../ip.js';
import type { ClusterState } from '../state/cluster-state.js';
import { poolGoesWith } from './decide.js';

export interface NodeLiveness {
  /** When the controller last heard from the node (ms since epoch). */
  lastSeenMs: number;
  /**
   * The node's latest report: when it was received, the endpoints it listed, and the addresses it showed held by
   * containers (`reportedAddresses`).
   */
  report?: { atMs: number; endpoints: ReadonlySet<string>; addresses?: ReadonlySet<string>; held?: ReadonlySet<string> };
}

/**
 * The addresses a report shows held by running containers (endpoint states with a container id: the agent read
 * them from Docker), in canonical form (`formatValue`), without prefix lengths.
 */
export function reportedAddresses(states: ReadonlyArray<{ containerId?: string; address?: string; addressV6?: string }>): Set<string> {
  const out = new Set<string>();
  for (const s of states) {
    if (!s.containerId) continue;
    for (const cidr of [s.address, s.addressV6]) {
      const a = cidr ? tryParseAddr(cidr.split('/')[0]!) : undefined;
      if (a) out.add(formatValue(a.family, a.value));
    }
  }
  return out;
}

export interface LeakPolicy {
  /** An allocation never bound to an endpoint within this time is a candidate. */
  unboundGraceMs: number;
  /** A report counts against a binding only when received this long after it. */
  reportSlackMs: number;
  /** A node unseen for this long has its addresses reclaimed. */
  nodeExpiredMs: number;
}

export const DEFAULT_LEAK_POLICY: LeakPolicy = { unboundGraceMs: 60_000, reportSlackMs: 10_000, nodeExpiredMs: 3_600_000 };

export interface LeakCandidate {
  poolId: string;
  address: string;
  allocSeq: number;
  node: string;
  rule: 'unbound' | 'endpoint-gone' | 'node-expired';
  /** endpoint-gone: when the report that does not list the endpoint was received. */
  reportAtMs?: number;
}

/** A candidate seen on a pass, remembered for the next: the report it was seen in (endpoint-gone). */
export interface LeakSighting {
  reportAtMs?: number;
}

export const candidateKey = (c: Pick<LeakCandidate, 'poolId' | 'address' | 'allocSeq'>) => `${c.poolId}|${c.address}|${c.allocSeq}`;

export function findLeakCandidates(
  state: ClusterState,
  nowMs: number,
  nodes: ReadonlyMap<string, NodeLiveness>,
  policy: LeakPolicy,
  /** Before this time the controller could not have heard from nodes (its own start). */
  knownSinceMs: number,
): LeakCandidate[] {
  const out: LeakCandidate[] = [];
  for (const p of state.pools.values()) {
    for (const [v, a] of p.allocs) {
      // A host address (host_access) lives as long as its node: reclaimed only with an expired node.
      if (a.kind !== 'endpoint' && a.kind !== 'host') continue;
      // The address is formatted only for a candidate: this loop runs over every allocation on each pass.
      const live = nodes.get(a.node);
      const candidate = (rule: LeakCandidate['rule']) => {
        const address = formatValue(p.cidr.family, v);
        // A container on the node still holds it (as Docker told the agent), or the node holds it for a container's
        // restart: live, whatever else says.
        if (rule !== 'node-expired' && (live?.report?.addresses?.has(address) || live?.report?.held?.has(address))) return;
        out.push({ poolId: p.poolId, address, allocSeq: a.seq, node: a.node, rule, ...(rule === 'endpoint-gone' ? { reportAtMs: live?.report?.atMs } : {}) });
      };
      // A node counts as seen at the leader's start at the latest: the reports of a leaderless while were heard but not
      // answered, and a reporter waiting on one may have missed its schedule.
      const lastSeen = Math.max(live?.lastSeenMs ?? knownSinceMs, knownSinceMs);
      if (nowMs - lastSeen >= policy.nodeExpiredMs) {
        candidate('node-expired');
        continue;
      }
      if (a.kind === 'host') continue;
      if (!a.endpointId) {
        if (nowMs - Date.parse(a.time) >= policy.unboundGraceMs) candidate('unbound');
        continue;
      }
      const rep = live?.report;
      if (rep && rep.atMs - Date.parse(a.boundTime ?? a.time) >= policy.reportSlackMs && !rep.endpoints.has(a.endpointId)) {
        candidate('endpoint-gone');
      }
    }
  }
  return out;
}

/**
 * One pass of the collector: returns the releases for candidates also seen on the previous pass (from a newer report,
 * for the report rule), and the candidates to remember for the next one.
 */
export function collectLeaks(
  state: ClusterState,
  previous: ReadonlyMap<string, LeakSighting>,
  candidates: LeakCandidate[],
): { events: EventBody[]; remember: Map<string, LeakSighting>; reclaimed: LeakCandidate[] } {
  const events: EventBody[] = [];
  const remember = new Map<string, LeakSighting>();
  const reclaimed: LeakCandidate[] = [];
  for (const c of candidates) {
    const key = candidateKey(c);
    const before = previous.get(key);
    if (!before) {
      remember.set(key, { reportAtMs: c.reportAtMs });
      continue;
    }
    // The same report again (no newer one came since the last pass): still one sighting.
    if (c.reportAtMs !== undefined && before.reportAtMs !== undefined && c.reportAtMs <= before.reportAtMs) {
      remember.set(key, before);
      continue;
    }
    reclaimed.push(c);
    events.push({ type: 'AddressReleased', data: { poolId: c.poolId, address: c.address, node: c.node, allocSeq: c.allocSeq, reason: `leak: ${c.rule}` } });
  }
  // Pools left with no holder and no endpoint go too (as after a normal release).
  const freed = new Map<string, number>();
  for (const c of reclaimed) freed.set(c.poolId, (freed.get(c.poolId) ?? 0) + 1);
  for (const [poolId, n] of freed) if (poolGoesWith(state.pools.get(poolId)!, n)) events.push({ type: 'PoolDeleted', data: { poolId } });
  return { events, remember, reclaimed };
}
