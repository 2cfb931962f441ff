/** Node decisions (pure, like ipam/decide.ts): registering an agent's node. */
import type { ClusterState } from '../state/cluster-state.js';
import type { Decision } from '../state/decision.js';
import { parentInterfaces } from './interfaces.js';

/** What identifies a node (an agent's hello, and the head of each report). */
export interface NodeIdentity {
  node: string;
  /** The host's address on the underlay (next hop of routes to its blocks). */
  address?: string;
  version?: string;
  /** Names of the host's network interfaces. */
  interfaces?: string[];
}

/**
 * An agent says hello (with each report): registered once, re-registered when what identifies it changes: its
 * address, version, or the interfaces that can be parents. Veths, Docker's bridges and underlay's own endpoint
 * links and dummies come and go with containers: they are status (the report, in the node directory), not events.
 */
export function decideNodeHello(state: ClusterState, req: NodeIdentity): Decision<Record<string, never>> {
  const n = state.nodes.get(req.node);
  const ifs = req.interfaces ? parentInterfaces(req.interfaces) : undefined;
  // Registrations written before this rule may hold transient names: compare what can be a parent on both sides.
  const sameIfs = parentInterfaces(n?.interfaces ?? []).join() === (ifs ?? []).join();
  if (n && n.address === req.address && n.version === req.version && sameIfs) return { events: [], result: {} };
  return { events: [{ type: 'NodeRegistered', data: { node: req.node, address: req.address, version: req.version, ...(ifs ? { interfaces: ifs } : {}) } }], result: {} };
}
