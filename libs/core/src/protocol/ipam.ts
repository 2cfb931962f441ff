/**
 * The IPAM requests an agent sends to the controller over NATS request/reply, and the answers.
 * Subjects are in ./subjects.ts. Every message is validated with these schemas on both ends. A request a
 * decision takes parses to that decision's own input type (ipam/requests.ts, network/, node/), checked by
 * parsesTo at compile time.
 */
import { z } from 'zod';
import { NetworkDefinition } from '../state/network-definition.js';
import { LIMITS, cutText, optionMap, text } from '../limits.js';
import type { AddressRelease, AddressRequest, EndpointBinding, PoolRelease, PoolRequest } from '../ipam/requests.js';
import type { NetworkRecordRequest } from '../network/decide.js';
import type { NodeIdentity } from '../node/decide.js';
import { parsesTo } from './agree.js';

export const NodeName = z
  .string()
  .max(LIMITS.nodeName)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a node name is 1-63 letters, digits, "_", "." or "-"');

const dockerId = text(LIMITS.dockerId).min(1);
const poolId = text(LIMITS.poolId).min(1);
const address = text(LIMITS.address);
const requestId = z.string().min(1).max(LIMITS.requestId);
const allocSeq = z.number().int().positive();

/** libnetwork's option names, defined with the driver options; re-exported for the wire's readers. */
export { GATEWAY_REQUEST_TYPE, MAC_OPTION } from '../options.js';

export const RequestPoolReq = parsesTo<PoolRequest>()(z.object({
  node: NodeName,
  space: text(LIMITS.name).min(1),
  pool: address,
  subPool: address.default(''),
  options: optionMap().default({}),
  v6: z.boolean().default(false),
  /** Made by the agent per Docker request and reused across its retries: a repeat is the same request. */
  requestId: requestId.optional(),
}));
export type RequestPoolReq = z.infer<typeof RequestPoolReq>;
export const RequestPoolRes = z.object({ poolId: text(LIMITS.poolId), pool: address, data: optionMap().default({}) });
export type RequestPoolRes = z.infer<typeof RequestPoolRes>;

export const ReleasePoolReq = parsesTo<PoolRelease>()(z.object({ node: NodeName, poolId }));
export type ReleasePoolReq = z.infer<typeof ReleasePoolReq>;

export const RequestAddressReq = parsesTo<AddressRequest>()(z.object({
  node: NodeName,
  poolId,
  /** "" or a bare IP (Docker sends no mask). */
  address: address.default(''),
  options: optionMap().default({}),
  /** Made by the agent per Docker request and reused across its retries: the allocation's handle. */
  requestId: requestId.optional(),
  /**
   * For a requested address: an endpoint's static --ip, or an --aux-address reservation (Docker sends both with no
   * options; the agent tells them apart by call order). Without it, a request with a MAC is an endpoint's.
   */
  /** `host`: the node's own address on a host_access network (its shim link). */
  kind: z.enum(['endpoint', 'aux', 'host']).optional(),
}));
export type RequestAddressReq = z.infer<typeof RequestAddressReq>;
export const RequestAddressRes = z.object({
  /** CIDR: the address with the pool's prefix length. */
  address,
  /** Sequence number of the allocation, to be carried by its release. */
  allocSeq: z.number().int().nonnegative(),
  /** false: a point-to-point subnet's gateway answer, reserved for nobody (absent: reserved). */
  reserved: z.literal(false).optional(),
});
export type RequestAddressRes = z.infer<typeof RequestAddressRes>;

export const ReleaseAddressReq = parsesTo<AddressRelease>()(z.object({
  node: NodeName,
  poolId,
  address: address.min(1),
  /** When given, the release only applies to that allocation (a late release of a reused address is ignored). */
  allocSeq: allocSeq.optional(),
}));
export type ReleaseAddressReq = z.infer<typeof ReleaseAddressReq>;

export const EmptyRes = z.object({});

/** CreateEndpoint: tie an allocated address to the Docker endpoint holding it. */
export const BindEndpointReq = parsesTo<EndpointBinding>()(z.object({
  node: NodeName,
  poolId,
  address: address.min(1),
  allocSeq: allocSeq.optional(),
  endpointId: dockerId,
  networkId: dockerId,
  claim: z.boolean().optional(),
}));
export type BindEndpointReq = z.infer<typeof BindEndpointReq>;
/** `allocSeq`: the allocation bound (claims); `claimed`: it was allocated to the node by this request. */
export const BindEndpointRes = z.object({ bound: z.boolean(), allocSeq: allocSeq.optional(), claimed: z.boolean().optional() });

export const NodeHello = parsesTo<NodeIdentity>()(z.object({
  node: NodeName,
  /** The host's address on the underlay (next hop of routes to its blocks). */
  address: text(LIMITS.hostAddress).optional(),
  version: text(LIMITS.version).optional(),
  /** Names of the host's network interfaces. */
  interfaces: z.array(text(LIMITS.ifName)).max(LIMITS.nodeInterfaces).optional(),
}));
export type NodeHello = z.infer<typeof NodeHello>;

/** One endpoint as its host sees it. Names and texts only shown are cut to their maxima (cutText), never refused. */
export const EndpointStatus = z.object({
  endpointId: text(LIMITS.dockerId),
  networkId: text(LIMITS.dockerId),
  /** The network's Docker name. */
  network: cutText(LIMITS.name).optional(),
  container: cutText(LIMITS.name).optional(),
  /** The container's id (Docker's key in a network's Containers: `ep-<endpoint id>` before a container has it). */
  containerId: text(LIMITS.name).optional(),
  address: address.optional(),
  addressV6: address.optional(),
  /** Host-side link (before it moves into the container). */
  link: text(LIMITS.ifName).optional(),
  state: z.enum(['created', 'joined', 'error']),
  error: cutText(LIMITS.message).optional(),
});
export type EndpointStatus = z.infer<typeof EndpointStatus>;

/** One network on a host: is its replica there and usable. */
export const NetworkStatus = z.object({
  name: cutText(LIMITS.name),
  networkId: text(LIMITS.dockerId).optional(),
  state: z.enum(['ready', 'creating', 'parent-missing', 'conflict', 'removing', 'error']),
  detail: cutText(LIMITS.message).optional(),
  parent: text(LIMITS.ifName).optional(),
  /** Made by this host's agent from the cluster definition (not typed by a user here). */
  replica: z.boolean().default(false),
});
export type NetworkStatus = z.infer<typeof NetworkStatus>;

/**
 * An agent's periodic report, which also renews its lease: it is alive, these are every endpoint its
 * Docker holds now (the leak rules rely on it), and the state of its endpoints and networks.
 */
export const NodeReport = NodeHello.extend({
  endpoints: z.array(text(LIMITS.dockerId)).max(LIMITS.nodeEndpoints),
  /** The node counts as NotReady when no report came for this long. */
  leaseMs: z.number().int().positive().max(LIMITS.timerMs).optional(),
  endpointStates: z.array(EndpointStatus).max(LIMITS.nodeEndpoints).default([]),
  networkStates: z.array(NetworkStatus).max(LIMITS.nodeNetworks).default([]),
  /**
   * Addresses this node holds for a container's restart (released by Docker a moment ago, handed back first to the
   * next container here): still this node's, but no endpoint's. The leak rules leave them, and a network's removal
   * does not count them as attached.
   */
  heldAddresses: z.array(address).max(LIMITS.nodeEndpoints).optional(),
});
export type NodeReport = z.infer<typeof NodeReport>;

/** CreateNetwork on a node: the Docker network and the pools it uses. */
export const NetworkRecordReq = parsesTo<NetworkRecordRequest>()(z.object({
  node: NodeName,
  networkId: dockerId,
  poolIds: z.array(text(LIMITS.poolId)).max(LIMITS.poolIds),
  options: optionMap().default({}),
}));
export type NetworkRecordReq = z.infer<typeof NetworkRecordReq>;
/** The network's Docker name and definition, read from the Docker Engine API after CreateNetwork. */
export const NetworkNameReq = z.object({
  node: NodeName,
  networkId: dockerId,
  name: text(LIMITS.name).min(1),
  definition: NetworkDefinition.optional(),
  /** The agent made this network from the cluster's definition: it may join the cluster network, never create it. */
  replica: z.boolean().default(false),
});
export type NetworkNameReq = z.infer<typeof NetworkNameReq>;
/**
 * `seq` and `chains` (as NetworkRemoveRes): where the name was recorded, and the heads of the cluster chain and the
 * asking host's chain then. A new cluster network's `ClusterNetworkCreated` and the host's `NetworkNamed` are on two
 * chains: an agent's replica reconcile reads both through these heads before it acts on the network.
 */
export const NetworkNameRes = z.object({
  member: z.boolean(),
  conflict: text(LIMITS.message).optional(),
  seq: z.number().int().nonnegative().optional(),
  chains: z.record(text(LIMITS.chain), z.number().int().nonnegative()).optional(),
});
/**
 * `chains`: the heads of the chains asked for. `held`: the chains of the pools where the asking node holds a block or a
 * reference (an agent follows them even when no network of its own names the pool, e.g. a block claimed for it by a
 * request that did not come through its Docker).
 */
export const EventsHeadRes = z.object({
  seq: z.number().int().nonnegative(),
  chains: z.record(z.string(), z.number().int().nonnegative()).optional(),
  held: z.array(z.string()).optional(),
});
export const NetworkRemoveReq = z.object({
  node: NodeName,
  networkId: dockerId,
  /** Removing a member of a cluster network removes the cluster network (false: record only this host's removal). */
  cluster: z.boolean().default(true),
  /** Only say whether the removal would be refused (Docker's authorization hook asks before `docker network rm`). */
  dryRun: z.boolean().default(false),
});
export type NetworkRemoveReq = z.infer<typeof NetworkRemoveReq>;
/**
 * `seq`: the log position after the removal (an agent waits until its view has it before reconciling). `chains`: the
 * heads then of the chains an agent's replica reconcile reads (the cluster chain and the asking node's host chain):
 * an agent following chains (interest-based delivery) waits until each of them is read through its head, since the
 * highest seq it folded says nothing of a chain that lags behind another.
 */
export const NetworkRemoveRes = z.object({
  seq: z.number().int().nonnegative().optional(),
  chains: z.record(text(LIMITS.chain), z.number().int().nonnegative()).optional(),
});
