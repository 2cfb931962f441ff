/**
 * Which of a host's interfaces identify the node. An agent reports every interface name it sees (status,
 * kept in the controller's node directory), but most of them come and go with containers and networks:
 * Docker's veths and bridges, underlay's own endpoint links (`ul<11 hex>`) and dummy parents. Only the
 * interfaces that can be a network's parent are part of the node's registration (`NodeRegistered`), so
 * starting and stopping containers never re-registers a node. Pure.
 */
import { isEndpointLinkName } from '../options.js';

/** Names that appear and disappear with containers or networks, never named by a user as a parent. */
const TRANSIENT: readonly RegExp[] = [
  /^lo$/,
  // The host side of a container's veth pair (Docker names them veth<7 hex>; other runtimes veth<anything>).
  /^veth/,
  // Docker's bridges: the default one, swarm's gateway bridge, and one per user-defined bridge network.
  /^docker\d*$/,
  /^docker_gwbridge$/,
  /^br-[0-9a-f]{12}$/,
  // underlay's own dummy parents of isolated networks (`dm-`/`di-` + 12 hex of the network id).
  /^d[mi]-[0-9a-f]{12}$/,
];

/** True for an interface that comes and goes with containers or networks (not a possible parent). */
export function isTransientInterface(name: string): boolean {
  return isEndpointLinkName(name) || TRANSIENT.some((r) => r.test(name));
}

/** The interfaces that can be a network's parent, sorted and without duplicates (what a registration carries). */
export function parentInterfaces(names: readonly string[]): string[] {
  return [...new Set(names.filter((n) => !isTransientInterface(n)))].sort();
}
