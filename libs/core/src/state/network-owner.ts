/** Who may act on a Docker network: read by the ipam/ and network/ decisions. Pure. */
import { PermissionDeniedError } from '../errors.js';
import type { ClusterState } from './cluster-state.js';

/**
 * A Docker network id belongs to the node that recorded it (each dockerd makes its own ids): only that node may
 * record, name, define or remove it.
 */
export function checkNetworkOwner(state: ClusterState, networkId: string, node: string): void {
  const n = state.networks.get(networkId);
  if (n && n.node !== node) {
    throw new PermissionDeniedError(`network ${n.name ? `${JSON.stringify(n.name)} (${networkId.slice(0, 12)})` : networkId.slice(0, 12)} is recorded by node ${n.node}, not ${node}`);
  }
}
