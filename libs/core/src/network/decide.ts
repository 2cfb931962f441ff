/**
 * Network decisions (pure, like ipam/decide.ts): recording and naming a host's Docker network, defining a
 * network once for the cluster, recognising each host's Docker network as a member of it, and removing it
 * once for every host.
 */
import { ConflictError, InvalidArgumentError, NotFoundError } from '../errors.js';
import type { EventBody } from '../state/events.js';
import { formatCidr, formatValue, overlaps, parseCidr } from '../ip.js';
import type { Decision } from '../state/decision.js';
import { DEFAULT_POOL_LIMITS, OVERLAP_HINT, SPACE_OPTION, checkPoolOptions, checkPoolSize, clusterNetworkHolders, networksUsing, overlappingPool, type PoolLimits } from '../state/pool-rules.js';
import { checkNetworkOwner } from '../state/network-owner.js';
import type { ClusterState } from '../state/cluster-state.js';
import { LOCAL_ADDRESS_SPACE } from '../options.js';
import { LIMITS, clipText } from '../limits.js';
import { diffDefinitions, normalizeDefinition, type NetworkDefinition, type NetworkDefinitionInput } from '../state/network-definition.js';

/** An endpoint holding an address on one host's member of a cluster network. */
export interface AttachedEndpoint {
  node: string;
  endpointId: string;
  networkId: string;
  poolId: string;
  address: string;
}

/** Whether a node reported an address held for a container's restart (no endpoint holds it). */
export type HeldLookup = (node: string, address: string) => boolean;

/**
 * Every bound endpoint on any host's member of the cluster network `name`, but for addresses their node reports held
 * for a restart (the endpoint went: address-holds.ts in the agent).
 */
export function attachedEndpoints(state: ClusterState, name: string, held: HeldLookup = () => false): AttachedEndpoint[] {
  const members = new Set([...state.networks.values()].filter((n) => n.name === name && n.cluster !== false).map((n) => n.networkId));
  const out: AttachedEndpoint[] = [];
  if (members.size === 0) return out;
  for (const p of state.pools.values()) {
    for (const [v, a] of p.allocs) {
      if (a.kind === 'endpoint' && a.networkId && members.has(a.networkId) && a.endpointId) {
        const address = formatValue(p.cidr.family, v);
        if (!held(a.node, address)) out.push({ node: a.node, endpointId: a.endpointId, networkId: a.networkId, poolId: p.poolId, address });
      }
    }
  }
  return out.sort((x, y) => x.node.localeCompare(y.node) || x.address.localeCompare(y.address));
}

/** Names the container of an endpoint, when a node's report says it. */
export type ContainerLookup = (node: string, endpointId: string) => string | undefined;

/** Endpoints an in-use refusal lists by name (the rest are counted). */
const LISTED_ENDPOINTS = 20;

function inUseError(name: string, attached: AttachedEndpoint[], who: ContainerLookup): ConflictError {
  const byNode = new Map<string, string[]>();
  for (const a of attached.slice(0, LISTED_ENDPOINTS)) {
    const c = who(a.node, a.endpointId);
    const what = `${c ? `container ${c}` : `endpoint ${a.endpointId.slice(0, 12)}`} (${a.address})`;
    byNode.set(a.node, [...(byNode.get(a.node) ?? []), what]);
  }
  const more = attached.length - LISTED_ENDPOINTS;
  const list = [...byNode].map(([node, l]) => `on ${node}: ${l.join(', ')}`).join('; ') + (more > 0 ? `; and ${more} more` : '');
  return new ConflictError(`error while removing network: network ${name} has active endpoints ${list}. Stop those containers or disconnect them (docker network disconnect ${name} CONTAINER on their host) first`);
}

/** Another cluster network already using one of these subnets (same address space). */
function subnetClash(state: ClusterState, name: string, def: NetworkDefinition): string | undefined {
  const space = def.ipamOptions[SPACE_OPTION] ?? '';
  for (const other of state.clusterNetworks.values()) {
    if (other.name === name || (other.definition.ipamOptions[SPACE_OPTION] ?? '') !== space) continue;
    for (const s of def.subnets) {
      const c = parseCidr(s.subnet);
      const hit = other.definition.subnets.find((o) => overlaps(parseCidr(o.subnet), c));
      if (hit) return `subnet ${s.subnet} overlaps with ${hit.subnet} of ${clusterNetworkHolders(state, other.name)}; ${OVERLAP_HINT}`;
    }
  }
  return undefined;
}

/** CreateNetwork on a node: the Docker network and the pools it uses. */
export interface NetworkRecordRequest {
  node: string;
  networkId: string;
  poolIds: string[];
  options: Record<string, string>;
}

export interface NetworkDefineReq {
  node: string;
  networkId: string;
  name: string;
  definition: NetworkDefinitionInput;
  /** Made from the cluster's definition by an agent: joins the cluster network but never creates it. */
  replica?: boolean;
}
export interface NetworkDefineResult {
  /** This Docker network is (now) a member of the cluster network of its name. */
  member: boolean;
  /** Why it is not: how it differs from the cluster's network of the same name. */
  conflict?: string;
}

/**
 * A host's Docker network got its name: it becomes the cluster network of that name (the first one),
 * a member of it (same definition), or is refused (different definition or a subnet another cluster
 * network uses): then the agent removes it.
 */
export function decideNetworkDefine(state: ClusterState, req: NetworkDefineReq): Decision<NetworkDefineResult> {
  checkNetworkOwner(state, req.networkId, req.node);
  const n = state.networks.get(req.networkId);
  if (!n) return { events: [], result: { member: false, conflict: `network ${req.networkId.slice(0, 12)} was never recorded` } };
  const def = normalizeDefinition(req.definition);
  const named = (cluster: boolean): EventBody[] => (n.name === req.name && n.cluster === cluster ? [] : [{ type: 'NetworkNamed', data: { networkId: req.networkId, name: req.name, cluster } }]);
  const cn = state.clusterNetworks.get(req.name);
  if (cn) {
    const diff = diffDefinitions(cn.definition, def);
    if (diff.length === 0) return { events: named(true), result: { member: true } };
    const conflict = clipText(`network ${req.name} already exists in the cluster with a different definition: ${diff.join('; ')}`, LIMITS.message);
    return { events: named(false), result: { member: false, conflict } };
  }
  // A replica of a cluster network removed meanwhile: a member of nothing, which its agent removes.
  if (req.replica) return { events: named(true), result: { member: true } };
  const clash = subnetClash(state, req.name, def);
  if (clash) return { events: named(false), result: { member: false, conflict: clash } };
  return {
    events: [{ type: 'ClusterNetworkCreated', data: { name: req.name, definition: def, originNode: req.node, originNetworkId: req.networkId } }, ...named(true)],
    result: { member: true },
  };
}

/** `underlay network create` (the HTTP API): defines the network; agents create it in their Docker. */
export function decideClusterNetworkCreate(
  state: ClusterState,
  req: { name: string; definition: NetworkDefinitionInput },
  limits: PoolLimits = DEFAULT_POOL_LIMITS,
): Decision<{ created: boolean }> {
  const def = normalizeDefinition(req.definition);
  for (const s of def.subnets) {
    let c;
    try {
      c = parseCidr(s.subnet, { strict: true });
    } catch (e) {
      throw new InvalidArgumentError(`subnets: ${(e as Error).message}`);
    }
    if (formatCidr(c) !== s.subnet) throw new InvalidArgumentError(`subnets: write ${s.subnet} as ${formatCidr(c)}`);
    if ((c.family === 6) && !def.ipv6) throw new InvalidArgumentError(`subnets: ${s.subnet} is IPv6: set ipv6 to true`);
    // The pools the hosts will ask for: refused here at once rather than on every host.
    try {
      checkPoolSize(c, limits);
      checkPoolOptions(def.ipamOptions, c.family, limits);
    } catch (e) {
      throw new InvalidArgumentError(`${checkPoolSizeField(e)}: ${(e as Error).message}`);
    }
  }
  const cn = state.clusterNetworks.get(req.name);
  if (cn) {
    const diff = diffDefinitions(cn.definition, def);
    if (diff.length === 0) return { events: [], result: { created: false } };
    throw new ConflictError(`network ${req.name} already exists with a different definition: ${diff.join('; ')}`);
  }
  const clash = subnetClash(state, req.name, def);
  if (clash) throw new ConflictError(clash);
  const space = def.ipamOptions[SPACE_OPTION] || LOCAL_ADDRESS_SPACE;
  for (const s of def.subnets) {
    const p = overlappingPool(state, space, parseCidr(s.subnet));
    if (p) throw new ConflictError(`subnet ${s.subnet} overlaps with ${p.cidrText} of ${networksUsing(state, p.poolId)}, already in use in address space "${space}"; ${OVERLAP_HINT}`);
  }
  return { events: [{ type: 'ClusterNetworkCreated', data: { name: req.name, definition: def } }], result: { created: true } };
}

/** `underlay network rm`: refused while any host has an endpoint on it. */
export function decideClusterNetworkRemove(
  state: ClusterState,
  req: { name: string },
  who: ContainerLookup = () => undefined,
  held: HeldLookup = () => false,
): Decision<Record<string, never>> {
  if (!state.clusterNetworks.has(req.name)) throw new NotFoundError(`network ${req.name} not found`);
  const attached = attachedEndpoints(state, req.name, held);
  if (attached.length > 0) throw inUseError(req.name, attached, who);
  return { events: [{ type: 'ClusterNetworkRemoved', data: { name: req.name } }], result: {} };
}

/** The request field a pool-limit refusal is about. */
const checkPoolSizeField = (e: unknown): string => ((e as Error).message.startsWith('--ipam-opt') ? 'ipamOptions' : 'subnets');

/**
 * DeleteNetwork on a host (`docker network rm` there, or an agent removing its replica). For a member
 * of a live cluster network this is `docker network rm` for the whole cluster: refused while another
 * host has an endpoint on it, otherwise the cluster network goes too. Only the node that recorded the
 * Docker network may remove it (`underlay network rm` is decideClusterNetworkRemove).
 */
export function decideNetworkRemoved(
  state: ClusterState,
  req: { networkId: string; node: string; cluster?: boolean },
  who: ContainerLookup = () => undefined,
  held: HeldLookup = () => false,
): Decision<Record<string, never>> {
  const n = state.networks.get(req.networkId);
  if (!n) return { events: [], result: {} };
  checkNetworkOwner(state, req.networkId, req.node);
  const events: EventBody[] = [];
  if (req.cluster !== false && n.cluster && n.name && state.clusterNetworks.has(n.name)) {
    const attached = attachedEndpoints(state, n.name, held);
    if (attached.length > 0) throw inUseError(n.name, attached, who);
    events.push({ type: 'ClusterNetworkRemoved', data: { name: n.name } });
  }
  events.push({ type: 'NetworkRemoved', data: { networkId: req.networkId, node: req.node } });
  return { events, result: {} };
}
export function decideNetworkRecorded(state: ClusterState, req: NetworkRecordRequest): Decision<Record<string, never>> {
  checkNetworkOwner(state, req.networkId, req.node);
  const n = state.networks.get(req.networkId);
  const same = n && n.node === req.node && n.poolIds.join() === req.poolIds.join() && JSON.stringify(n.options) === JSON.stringify(req.options);
  return { events: same ? [] : [{ type: 'NetworkRecorded', data: { networkId: req.networkId, node: req.node, poolIds: req.poolIds, options: req.options } }], result: {} };
}

export function decideNetworkNamed(state: ClusterState, req: { networkId: string; name: string; node: string }): Decision<Record<string, never>> {
  checkNetworkOwner(state, req.networkId, req.node);
  const n = state.networks.get(req.networkId);
  return { events: n && n.name !== req.name ? [{ type: 'NetworkNamed', data: { networkId: req.networkId, name: req.name } }] : [], result: {} };
}
