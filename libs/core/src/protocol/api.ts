/**
 * The controller's HTTP API (what `underlay network|endpoint|node|ipam|events` talk to): every request
 * and response body as a zod schema. The controller validates requests with them, the CLI reads answers
 * with them, and /openapi.json is generated from them (services/controller/src/openapi.ts), so the
 * three cannot drift apart.
 */
import { z } from 'zod';
import { ERROR_CODES } from '../errors.js';
import { ClusterEvent } from '../state/events.js';
import { parseAddr, parseCidr } from '../ip.js';
import { NetworkDefinition, NetworkName, SubnetConfig } from '../state/network-definition.js';
import { NetworkStatus } from './ipam.js';
import { CONTINUE_MAX, PageQuery } from './paging.js';
import { LIMITS, boundedRecord, text } from '../limits.js';
import { TRACE_ID_PATTERN, TRACE_ID_RULE, isTraceId } from '../trace.js';
import type { IpamCheckResult, OperatorReleased } from '../ipam/check.js';

/** Where the CLI looks for the controller when neither --controller nor UNDERLAY_CONTROLLER says. */
export const DEFAULT_CONTROLLER_URL = 'http://127.0.0.1:7410';
/** Largest request body the API reads. */
export const API_MAX_BODY_BYTES = 1024 * 1024;
/** How often a `GET /v1/events?follow=true` stream looks for new events. */
export const EVENTS_FOLLOW_POLL_MS = 250;

// ---------------------------------------------------------------------------------------------
// Errors

/** The one list of error codes (errors.ts ERROR_CODES), the HTTP API's own among them. */
export const ApiErrorCode = z.enum(ERROR_CODES);
export type ApiErrorCode = z.infer<typeof ApiErrorCode>;

/** Every non-2xx answer. `field` names the wrong part of a request (`subnets.0.subnet`), when one is. */
export const ApiError = z.object({
  error: z.object({
    code: ApiErrorCode,
    message: text(LIMITS.message),
    field: text(LIMITS.name).optional(),
  }),
});
export type ApiError = z.infer<typeof ApiError>;

// ---------------------------------------------------------------------------------------------
// Health and the raw state

export const Health = z.object({
  /** "ok" while the process serves (the liveness probe's answer). */
  status: z.literal('ok').optional(),
  ok: z.boolean(),
  /** leader, standby, starting or stopped. */
  role: text(LIMITS.name),
  name: text(LIMITS.name),
  /** Last event folded into this controller's state. */
  seq: z.number().int().nonnegative(),
});
export type Health = z.infer<typeof Health>;

/** `GET /v1/version`: the controller's version, its API's version, and which controller answered. */
export const VersionInfo = z.object({
  version: text(LIMITS.version),
  api: z.literal('v1'),
  name: text(LIMITS.name),
  role: text(LIMITS.name),
});
export type VersionInfo = z.infer<typeof VersionInfo>;

/** `GET /v1/ipam`: the folded state as `describe()` gives it (pools, nodes, networks, cluster networks). */
export const IpamDescribe = z.looseObject({
  seq: z.number().int().nonnegative(),
  pools: z.array(z.looseObject({ poolId: text(LIMITS.poolId), cidr: text(LIMITS.address) })).max(LIMITS.clusterList),
});

// ---------------------------------------------------------------------------------------------
// Networks

const cidrCheck = (strict: boolean) => (s: string, ctx: z.RefinementCtx) => {
  try {
    parseCidr(s, { strict });
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
};
const addrCheck = (s: string, ctx: z.RefinementCtx) => {
  try {
    parseAddr(s);
  } catch {
    ctx.addIssue({ code: 'custom', message: `invalid IP address: ${JSON.stringify(s)}` });
  }
};

/** A subnet as the API takes it: like SubnetConfig, with every address checked. */
export const ApiSubnet = z.object({
  subnet: SubnetConfig.shape.subnet.superRefine(cidrCheck(true)).describe('the subnet, e.g. 192.0.2.0/24 (host bits zero)'),
  ipRange: text(LIMITS.address).min(1).superRefine(cidrCheck(false)).optional().describe('--ip-range: dynamic addresses come only from here'),
  gateway: text(LIMITS.address).min(1).superRefine(addrCheck).optional().describe('--gateway (default: the first usable address)'),
  auxAddresses: boundedRecord(text(LIMITS.name), text(LIMITS.address).superRefine(addrCheck), LIMITS.auxAddresses).default({}).describe('--aux-address host=IP'),
});

/** `POST /v1/networks`: a name and a NetworkDefinition, as `docker network create` takes them. */
export const NetworkCreateRequest = z.strictObject({
  name: NetworkName,
  ...NetworkDefinition.shape,
  subnets: z.array(ApiSubnet).min(1, 'a network needs at least one --subnet').max(LIMITS.subnets, `a network has at most ${LIMITS.subnets} subnets`),
});
export type NetworkCreateRequest = z.infer<typeof NetworkCreateRequest>;
export type NetworkCreateRequestInput = z.input<typeof NetworkCreateRequest>;

/** Where and how a cluster network exists on one host. */
export const NetworkHost = z.object({
  node: text(LIMITS.nodeName),
  /** The node holds its lease (it reported within its lease). */
  nodeReady: z.boolean(),
  /**
   * The replica's state as the node last reported it; `recorded` when the controller has the node's
   * Docker network but the node's report does not mention it (yet).
   */
  state: z.union([NetworkStatus.shape.state, z.literal('recorded')]),
  networkId: text(LIMITS.dockerId).optional(),
  /** Made by the node's agent from the cluster definition (rather than typed there by a user). */
  replica: z.boolean().optional(),
  parent: text(LIMITS.ifName).optional(),
  detail: text(LIMITS.message).optional(),
});
export type NetworkHost = z.infer<typeof NetworkHost>;

export const NetworkCreated = z.object({
  seq: z.number().int().positive(),
  time: text(LIMITS.eventMeta),
  actor: text(LIMITS.actor),
  /** The node whose `docker network create` defined it (absent for `underlay network create`). */
  originNode: text(LIMITS.nodeName).optional(),
});

/** One line of `GET /v1/networks`. */
export const NetworkSummary = z.object({
  name: text(LIMITS.name),
  /** macvlan or ipvlan. */
  driver: text(LIMITS.name),
  /** macvlan_mode (bridge, private, vepa, passthru) or ipvlan_mode (l2, l3, l3s), with the ipvlan flag when not bridge. */
  mode: text(LIMITS.name),
  /** The parent link as defined (each agent maps it with its --parent-map); absent for an isolated network. */
  parent: text(LIMITS.optionValue).optional(),
  subnets: z.array(text(LIMITS.address)).max(LIMITS.subnets),
  ipv6: z.boolean(),
  internal: z.boolean(),
  hosts: z.array(NetworkHost).max(LIMITS.clusterList),
  /** Hosts whose node is Ready and whose replica is ready (or recorded). */
  readyHosts: z.number().int().nonnegative(),
  /** Nodes the cluster knows (every one should hold a replica). */
  totalHosts: z.number().int().nonnegative(),
  /** Endpoints holding an address on it, on any host. */
  endpointCount: z.number().int().nonnegative(),
  created: NetworkCreated,
});
export type NetworkSummary = z.infer<typeof NetworkSummary>;

export const NetworkList = z.object({ networks: z.array(NetworkSummary).max(LIMITS.clusterList) });
export type NetworkList = z.infer<typeof NetworkList>;

// ---------------------------------------------------------------------------------------------
// Endpoints

export const EndpointState = z.enum(['allocated', 'bound', 'created', 'joined', 'error']);
export type EndpointState = z.infer<typeof EndpointState>;

/** An endpoint address: where it lives and what holds it. */
export const EndpointView = z.object({
  /** The address (no prefix length); absent for an endpoint its host reports in error before it had one. */
  address: text(LIMITS.address).optional(),
  family: z.union([z.literal(4), z.literal(6)]).optional(),
  /** The node whose agent allocated it. */
  node: text(LIMITS.nodeName),
  /** The network's Docker name (on that node). */
  network: text(LIMITS.name).optional(),
  networkId: text(LIMITS.dockerId).optional(),
  endpointId: text(LIMITS.dockerId).optional(),
  /** Container name and id, as the node last reported. */
  container: text(LIMITS.name).optional(),
  containerId: text(LIMITS.name).optional(),
  /**
   * allocated: not bound to an endpoint yet; bound: bound, its node has not reported it; created, joined,
   * error: as its node reported it.
   */
  state: EndpointState,
  error: text(LIMITS.message).optional(),
  /** Host-side link name (before Docker moves it into the container). */
  link: text(LIMITS.ifName).optional(),
  poolId: text(LIMITS.poolId).optional(),
  allocSeq: z.number().int().positive().optional(),
  allocatedAt: text(LIMITS.eventMeta).optional(),
  boundAt: text(LIMITS.eventMeta).optional(),
});
export type EndpointView = z.infer<typeof EndpointView>;

/** The token of the next page, in an answer with more rows behind it (protocol/paging.ts). */
const nextPage = () => z.string().max(CONTINUE_MAX).optional().describe('more rows follow: pass it as `continue` to read the next page');

export const EndpointList = z.object({ endpoints: z.array(EndpointView).max(LIMITS.clusterList), continue: nextPage() });
export type EndpointList = z.infer<typeof EndpointList>;

/** `GET /v1/endpoints` filters. */
export const EndpointQuery = PageQuery.extend({
  network: text(LIMITS.name).min(1).optional().describe('only endpoints on this network'),
  node: text(LIMITS.nodeName).min(1).optional().describe('only endpoints of this node'),
});

/** `GET /v1/networks/{name}`: the definition, every host's replica and every endpoint. */
export const NetworkDetail = NetworkSummary.extend({
  definition: NetworkDefinition,
  endpoints: z.array(EndpointView).max(LIMITS.clusterList),
  continue: nextPage(),
});
export type NetworkDetail = z.infer<typeof NetworkDetail>;

/** `POST /v1/networks` answer: 201 with created=true, or 200 with created=false when the same network exists. */
export const NetworkCreateResponse = z.object({
  created: z.boolean(),
  network: NetworkDetail,
});
export type NetworkCreateResponse = z.infer<typeof NetworkCreateResponse>;

// ---------------------------------------------------------------------------------------------
// Nodes

export const NodeView = z.object({
  name: text(LIMITS.nodeName),
  status: z.enum(['Ready', 'NotReady']),
  /** When its last report came (absent: none since this controller started). */
  lastSeen: text(LIMITS.eventMeta).optional(),
  lastSeenAgoMs: z.number().int().nonnegative().optional(),
  leaseMs: z.number().int().positive().max(LIMITS.timerMs).optional(),
  address: text(LIMITS.hostAddress).optional(),
  version: text(LIMITS.version).optional(),
  interfaces: z.array(text(LIMITS.ifName)).max(LIMITS.nodeInterfaces),
  /** Endpoints bound on it (from the cluster state). */
  endpointCount: z.number().int().nonnegative(),
  /** Its networks' states, as it last reported them. */
  networks: z.array(NetworkStatus).max(LIMITS.nodeNetworks),
  /** A NodeRegistered event exists for it. */
  registered: z.boolean(),
});
export type NodeView = z.infer<typeof NodeView>;

export const NodeList = z.object({ nodes: z.array(NodeView).max(LIMITS.clusterList) });
export type NodeList = z.infer<typeof NodeList>;

// ---------------------------------------------------------------------------------------------
// IPAM usage

/** Address counts that may not fit a JSON number (an IPv6 /64 holds 2^64) are decimal strings. */
const count = text(LIMITS.countDigits).regex(/^\d+$/);

export const BlockUsage = z.object({
  block: text(LIMITS.address),
  node: text(LIMITS.nodeName),
  /** Addresses the block may hand out (inside the pool's range). */
  size: count,
  used: z.number().int().nonnegative(),
  endpoints: z.number().int().nonnegative(),
});
export type BlockUsage = z.infer<typeof BlockUsage>;

export const PoolUsage = z.object({
  poolId: text(LIMITS.poolId),
  space: text(LIMITS.name),
  cidr: text(LIMITS.address),
  ipRange: text(LIMITS.address).optional(),
  v6: z.boolean(),
  /** Names of the Docker networks using it. */
  networks: z.array(text(LIMITS.name)).max(LIMITS.clusterList),
  /** Nodes whose Docker holds it. */
  nodes: z.array(text(LIMITS.nodeName)).max(LIMITS.clusterList),
  /** Usable addresses of the subnet (less network and broadcast). */
  size: count,
  /** Allocated addresses of any kind (endpoints, gateway, aux). */
  used: z.number().int().nonnegative(),
  free: count,
  endpoints: z.number().int().nonnegative(),
  /** Gateway and --aux-address reservations. */
  reserved: z.number().int().nonnegative(),
  blockPrefix: z.number().int().min(0).max(128),
  strictAffinity: z.boolean(),
  /** All its blocks; `blocks` lists those in this page. */
  blockCount: z.number().int().nonnegative(),
  blocks: z.array(BlockUsage).max(LIMITS.clusterList),
});
export type PoolUsage = z.infer<typeof PoolUsage>;

export const IpamUsage = z.object({ pools: z.array(PoolUsage).max(LIMITS.clusterList), continue: nextPage() });
export type IpamUsage = z.infer<typeof IpamUsage>;

// ---------------------------------------------------------------------------------------------
// Events

const wholeNumber = () =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number ≥ 0')
    .max(15, 'must be at most 15 digits')
    .transform(Number);

/** `GET /v1/events` query. */
export const EventsQuery = z.object({
  since: wholeNumber().default(0).describe('events after this seq (default 0: from the first)'),
  limit: wholeNumber()
    .pipe(z.number().int().min(1, `must be 1-${LIMITS.readEvents}`).max(LIMITS.readEvents, `must be 1-${LIMITS.readEvents}`))
    .default(1000)
    .describe('at most this many events, 1-10000 (default 1000; ignored with follow)'),
  follow: z
    .enum(['true', 'false', '1', '0'])
    .transform((v) => v === 'true' || v === '1')
    .default(false)
    .describe('true: keep the answer open and send every event after since, then each new one, as NDJSON lines'),
  trace: z
    .string()
    .regex(TRACE_ID_PATTERN, { message: TRACE_ID_RULE, abort: true })
    .refine(isTraceId, TRACE_ID_RULE)
    .optional()
    .describe(
      'only the events of this W3C trace id (32 lowercase hex digits), filtered by the controller; `limit` counts matches, and `next` is the last event looked at (not only matched): read on from it until `next` stops moving',
    ),
});
export type EventsQuery = z.infer<typeof EventsQuery>;

export const EventsPage = z.object({
  events: z.array(ClusterEvent).max(LIMITS.readEvents),
  /** Pass as `since` to read on. */
  next: z.number().int().nonnegative(),
});
export type EventsPage = z.infer<typeof EventsPage>;

// ---------------------------------------------------------------------------------------------
// IPAM check and the operator's release

const checkNetwork = text(LIMITS.message).optional().describe('the names of the Docker networks using the pool (the endpoint\'s network, when known)');

/** An endpoint address no container holds (`reason`: unbound, endpoint-gone, node-gone). */
export const OrphanAllocationView = z.object({
  address: text(LIMITS.address),
  poolId: text(LIMITS.poolId),
  network: checkNetwork,
  node: text(LIMITS.nodeName),
  allocSeq: z.number().int().positive(),
  allocatedAt: text(LIMITS.eventMeta),
  endpointId: text(LIMITS.dockerId).optional(),
  reason: z.enum(['unbound', 'endpoint-gone', 'node-gone']),
  detail: text(LIMITS.message),
});

/** A container whose address has no allocation of its own (`reason`: no-allocation, other-node, other-endpoint, reserved, network-unknown). */
export const OrphanContainerView = z.object({
  address: text(LIMITS.address),
  node: text(LIMITS.nodeName),
  container: text(LIMITS.name).optional(),
  containerId: text(LIMITS.name).optional(),
  endpointId: text(LIMITS.dockerId),
  network: text(LIMITS.name).optional(),
  networkId: text(LIMITS.dockerId),
  poolId: text(LIMITS.poolId).optional(),
  reason: z.enum(['no-allocation', 'other-node', 'other-endpoint', 'reserved', 'network-unknown']),
  detail: text(LIMITS.message),
});

export const DuplicateAddressView = z.object({
  address: text(LIMITS.address),
  poolId: text(LIMITS.poolId),
  network: checkNetwork,
  holders: z.array(z.object({ node: text(LIMITS.nodeName), container: text(LIMITS.name).optional(), containerId: text(LIMITS.name).optional(), endpointId: text(LIMITS.dockerId) })).max(LIMITS.clusterList),
  detail: text(LIMITS.message),
});

export const GoneNodeBlockView = z.object({
  block: text(LIMITS.address),
  poolId: text(LIMITS.poolId),
  network: checkNetwork,
  node: text(LIMITS.nodeName),
  lastSeen: text(LIMITS.eventMeta).optional(),
  endpoints: z.number().int().nonnegative(),
  detail: text(LIMITS.message),
});

/** `GET /v1/ipam/check`: the cluster IPAM against every host's latest report. */
export const IpamCheck = z.object({
  /** No finding (held and pending addresses are none). */
  clean: z.boolean(),
  findings: z.number().int().nonnegative(),
  checkedAt: text(LIMITS.eventMeta),
  nodes: z.object({ ready: z.array(text(LIMITS.nodeName)).max(LIMITS.clusterList), notReady: z.array(text(LIMITS.nodeName)).max(LIMITS.clusterList) }),
  allocationsWithoutContainer: z.array(OrphanAllocationView).max(LIMITS.clusterList),
  containersWithoutAllocation: z.array(OrphanContainerView).max(LIMITS.clusterList),
  duplicateAddresses: z.array(DuplicateAddressView).max(LIMITS.clusterList),
  goneNodeBlocks: z.array(GoneNodeBlockView).max(LIMITS.clusterList),
  /** Held by a node for a container's restart (--address-hold-ms): no finding. */
  held: z.array(z.object({ address: text(LIMITS.address), node: text(LIMITS.nodeName), poolId: text(LIMITS.poolId), network: checkNetwork })).max(LIMITS.clusterList),
  /** Allocations too recent to judge (their container may be starting). */
  pending: z.number().int().nonnegative(),
});
export type IpamCheck = z.infer<typeof IpamCheck>;
// The check's result is exactly what the API sends (checked by tsc).
const _checkAgrees = (r: IpamCheckResult): IpamCheck => r;
void _checkAgrees;

/** `POST /v1/ipam/release`: an operator frees one endpoint address. */
export const IpamReleaseRequest = z.strictObject({
  address: text(LIMITS.address).min(1).describe('the address (a prefix length is ignored)'),
  network: NetworkName.optional().describe('only this network\'s pools (needed when the address is allocated in several address spaces)'),
});
export type IpamReleaseRequest = z.infer<typeof IpamReleaseRequest>;

export const IpamReleaseResponse = z.object({
  address: text(LIMITS.address),
  poolId: text(LIMITS.poolId),
  node: text(LIMITS.nodeName),
  allocSeq: z.number().int().positive(),
  network: checkNetwork,
});
export type IpamReleaseResponse = z.infer<typeof IpamReleaseResponse>;
const _releaseAgrees = (r: OperatorReleased): IpamReleaseResponse => r;
void _releaseAgrees;
