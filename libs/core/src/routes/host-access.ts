/**
 * Host access (`-o host_access=true`), the pure part: what the host routes through its shim link, and the handle of
 * its own address on a network. The host reaches its own containers through the shim (a macvlan parent cannot talk
 * to its children); everything else keeps the routes it had.
 */
import { type Family, formatValue } from '../ip.js';
import { blockOf, formatBlock, type ClusterState } from '../state/cluster-state.js';

/**
 * The destinations this node routes through a network's shim: every block of the network's pools the node owns, and
 * a host route (/32, /128) for each endpoint address the node holds outside its own blocks (borrowed). Addresses in
 * its blocks that another node borrowed are covered by the block route: through the shim (bridge mode) they go out
 * to the parent's wire as before. Sorted, IPv4 first.
 */
export function hostAccessRoutes(state: ClusterState, node: string, poolIds: readonly string[]): string[] {
  const out: { family: Family; value: bigint; prefix: number; dst: string }[] = [];
  const seen = new Set<string>();
  const add = (family: Family, value: bigint, prefix: number, dst: string) => {
    if (seen.has(dst)) return;
    seen.add(dst);
    out.push({ family, value, prefix, dst });
  };
  for (const poolId of poolIds) {
    const p = state.pools.get(poolId);
    if (!p) continue;
    const family = p.cidr.family;
    for (const net of p.nodeBlocks.get(node) ?? []) add(family, net, p.blockPrefix, formatBlock(p, net));
    const hostPrefix = family === 4 ? 32 : 128;
    for (const [v, a] of p.allocs) {
      if (a.kind !== 'endpoint' || a.node !== node || p.blocks.get(blockOf(p, v))?.node === node) continue;
      add(family, v, hostPrefix, `${formatValue(family, v)}/${hostPrefix}`);
    }
  }
  return out.sort((x, y) => x.family - y.family || (x.value < y.value ? -1 : x.value > y.value ? 1 : 0) || x.prefix - y.prefix).map((r) => r.dst);
}

/**
 * The request id of a node's host address on a network in one pool (the allocation's handle is
 * `<node>/req/<this>`): stable, so a repeat after a crash or restart finds the same address. At most 49 characters.
 */
export function hostAddressRequestId(networkId: string, poolId: string): string {
  // FNV-1a of the pool id: a network's pools differ in their subnet, which is all a short id needs to tell apart.
  let h = 0x811c9dc5;
  for (let i = 0; i < poolId.length; i++) h = Math.imul(h ^ poolId.charCodeAt(i), 0x01000193) >>> 0;
  return `host-${networkId.slice(0, 32)}-${h.toString(16).padStart(8, '0')}`;
}
