/**
 * The controller's HTTP API (what `underlay network|endpoint|node|ipam|events` talk to): every request
 * and response body as a zod schema. The controller validates requests with them, the CLI reads answers
 * with them, and /openapi.json is generated from them (services/controller/src/openapi.ts), so the
 * three cannot drift apart.
 */
import { z } from 'zod';
import { ClusterEvent } from '../events.js';
import { parseAddr, parseCidr } from '../ip.js';
import { NetworkDefinition, NetworkName, SubnetConfig } from '../network/definition.js';
import { NetworkStatus } from './ipam.js';

/** Where the CLI looks for the controller when neither --controller nor UNDERLAY_CONTROLLER says. */
export const DEFAULT_CONTROLLER_URL = 'http://127.0.0.1:7410';
/** Largest request body the API reads. */
export const API_MAX_BODY_BYTES = 1024 * 1024;
/** How often a `GET /v1/events?follow=true` stream looks for new events. */
export const EVENTS_FOLLOW_POLL_MS = 250;

// ---------------------------------------------------------------------------------------------
// Errors

export const ApiErrorCode = z.enum([
  'invalid-argument',
  'unauthorized',
  'not-found',
  'method-not-allowed',
  'conflict',
  'payload-too-large',
  'exhausted',
  'unavailable',
  'internal',
]);
export type ApiErrorCode = z.infer<typeof ApiErrorCode>;

/** Every non-2xx answer. `field` names the wrong part of a request (`subnets.0.subnet`), when one is. */
export const ApiError = z.object({
  error: z.object({
    code: ApiErrorCode,
    message: z.string(),
    field: z.string().optional(),
  }),
});
export type ApiError = z.infer<typeof ApiError>;

// ---------------------------------------------------------------------------------------------
// Health and the raw state

export const Health = z.object({
  ok: z.boolean(),
  /** leader, standby, starting or stopped. */
  role: z.string(),
  name: z.string(),
  /** Last event folded into this controller's state. */
  seq: z.number().int().nonnegative(),
});
export type Health = z.infer<typeof Health>;

/** `GET /v1/ipam`: the folded state as `describe()` gives it (pools, nodes, networks, cluster networks). */
export const IpamDescribe = z.looseObject({
  seq: z.number().int().nonnegative(),
  pools: z.array(z.looseObject({ poolId: z.string(), cidr: z.string() })),
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
  ipRange: z.string().min(1).superRefine(cidrCheck(false)).optional().describe('--ip-range: dynamic addresses come only from here'),
  gateway: z.string().min(1).superRefine(addrCheck).optional().describe('--gateway (default: the first usable address)'),
  auxAddresses: z.record(z.string(), z.string().superRefine(addrCheck)).default({}).describe('--aux-address host=IP'),
});

/** `POST /v1/networks`: a name and a NetworkDefinition, as `docker network create` takes them. */
export const NetworkCreateRequest = z.strictObject({
  name: NetworkName,
  ...NetworkDefinition.shape,
  subnets: z.array(ApiSubnet).min(1, 'a network needs at least one --subnet'),
});
export type NetworkCreateRequest = z.infer<typeof NetworkCreateRequest>;
export type NetworkCreateRequestInput = z.input<typeof NetworkCreateRequest>;

/** Where and how a cluster network exists on one host. */
export const NetworkHost = z.object({
  node: z.string(),
  /** The node holds its lease (it reported within its lease). */
  nodeReady: z.boolean(),
  /**
   * The replica's state as the node last reported it; `recorded` when the controller has the node's
   * Docker network but the node's report does not mention it (yet).
   */
  state: z.union([NetworkStatus.shape.state, z.literal('recorded')]),
  networkId: z.string().optional(),
  /** Made by the node's agent from the cluster definition (rather than typed there by a user). */
  replica: z.boolean().optional(),
  parent: z.string().optional(),
  detail: z.string().optional(),
});
export type NetworkHost = z.infer<typeof NetworkHost>;

export const NetworkCreated = z.object({
  seq: z.number().int().positive(),
  time: z.string(),
  actor: z.string(),
  /** The node whose `docker network create` defined it (absent for `underlay network create`). */
  originNode: z.string().optional(),
});

/** One line of `GET /v1/networks`. */
export const NetworkSummary = z.object({
  name: z.string(),
  /** macvlan or ipvlan. */
  driver: z.string(),
  /** macvlan_mode (bridge, private, vepa, passthru) or ipvlan_mode (l2, l3, l3s), with the ipvlan flag when not bridge. */
  mode: z.string(),
  /** The parent link as defined (each agent maps it with its --parent-map); absent for an isolated network. */
  parent: z.string().optional(),
  subnets: z.array(z.string()),
  ipv6: z.boolean(),
  internal: z.boolean(),
  hosts: z.array(NetworkHost),
  /** Hosts whose node is Ready and whose replica is ready (or recorded). */
  readyHosts: z.number().int().nonnegative(),
  /** Nodes the cluster knows (every one should hold a replica). */
  totalHosts: z.number().int().nonnegative(),
  /** Endpoints holding an address on it, on any host. */
  endpointCount: z.number().int().nonnegative(),
  created: NetworkCreated,
});
export type NetworkSummary = z.infer<typeof NetworkSummary>;

export const NetworkList = z.object({ networks: z.array(NetworkSummary) });
export type NetworkList = z.infer<typeof NetworkList>;

// ---------------------------------------------------------------------------------------------
// Endpoints

export const EndpointState = z.enum(['allocated', 'bound', 'created', 'joined', 'error']);
export type EndpointState = z.infer<typeof EndpointState>;

/** An endpoint address: where it lives and what holds it. */
export const EndpointView = z.object({
  /** The address (no prefix length); absent for an endpoint its host reports in error before it had one. */
  address: z.string().optional(),
  family: z.union([z.literal(4), z.literal(6)]).optional(),
  /** The node whose agent allocated it. */
  node: z.string(),
  /** The network's Docker name (on that node). */
  network: z.string().optional(),
  networkId: z.string().optional(),
  endpointId: z.string().optional(),
  /** Container name and id, as the node last reported. */
  container: z.string().optional(),
  containerId: z.string().optional(),
  /**
   * allocated: not bound to an endpoint yet; bound: bound, its node has not reported it; created, joined,
   * error: as its node reported it.
   */
  state: EndpointState,
  error: z.string().optional(),
  /** Host-side link name (before Docker moves it into the container). */
  link: z.string().optional(),
  poolId: z.string().optional(),
  allocSeq: z.number().int().positive().optional(),
  allocatedAt: z.string().optional(),
  boundAt: z.string().optional(),
});
export type EndpointView = z.infer<typeof EndpointView>;

export const EndpointList = z.object({ endpoints: z.array(EndpointView) });
export type EndpointList = z.infer<typeof EndpointList>;

/** `GET /v1/endpoints` filters. */
export const EndpointQuery = z.object({
  network: z.string().min(1).optional().describe('only endpoints on this network'),
  node: z.string().min(1).optional().describe('only endpoints of this node'),
});

/** `GET /v1/networks/{name}`: the definition, every host's replica and every endpoint. */
export const NetworkDetail = NetworkSummary.extend({
  definition: NetworkDefinition,
  endpoints: z.array(EndpointView),
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
  name: z.string(),
  status: z.enum(['Ready', 'NotReady']),
  /** When its last report came (absent: none since this controller started). */
  lastSeen: z.string().optional(),
  lastSeenAgoMs: z.number().int().nonnegative().optional(),
  leaseMs: z.number().int().positive().optional(),
  address: z.string().optional(),
  version: z.string().optional(),
  interfaces: z.array(z.string()),
  /** Endpoints bound on it (from the cluster state). */
  endpointCount: z.number().int().nonnegative(),
  /** Its networks' states, as it last reported them. */
  networks: z.array(NetworkStatus),
  /** A NodeRegistered event exists for it. */
  registered: z.boolean(),
});
export type NodeView = z.infer<typeof NodeView>;

export const NodeList = z.object({ nodes: z.array(NodeView) });
export type NodeList = z.infer<typeof NodeList>;

// ---------------------------------------------------------------------------------------------
// IPAM usage

/** Address counts that may not fit a JSON number (an IPv6 /64 holds 2^64) are decimal strings. */
const count = z.string().regex(/^\d+$/);

export const BlockUsage = z.object({
  block: z.string(),
  node: z.string(),
  /** Addresses the block may hand out (inside the pool's range). */
  size: count,
  used: z.number().int().nonnegative(),
  endpoints: z.number().int().nonnegative(),
});
export type BlockUsage = z.infer<typeof BlockUsage>;

export const PoolUsage = z.object({
  poolId: z.string(),
  space: z.string(),
  cidr: z.string(),
  ipRange: z.string().optional(),
  v6: z.boolean(),
  /** Names of the Docker networks using it. */
  networks: z.array(z.string()),
  /** Nodes whose Docker holds it. */
  nodes: z.array(z.string()),
  /** Usable addresses of the subnet (less network and broadcast). */
  size: count,
  /** Allocated addresses of any kind (endpoints, gateway, aux). */
  used: z.number().int().nonnegative(),
  free: count,
  endpoints: z.number().int().nonnegative(),
  /** Gateway and --aux-address reservations. */
  reserved: z.number().int().nonnegative(),
  blockPrefix: z.number().int(),
  strictAffinity: z.boolean(),
  blocks: z.array(BlockUsage),
});
export type PoolUsage = z.infer<typeof PoolUsage>;

export const IpamUsage = z.object({ pools: z.array(PoolUsage) });
export type IpamUsage = z.infer<typeof IpamUsage>;

// ---------------------------------------------------------------------------------------------
// Events

const wholeNumber = () => z.string().regex(/^\d+$/, 'must be a whole number ≥ 0').transform(Number);

/** `GET /v1/events` query. */
export const EventsQuery = z.object({
  since: wholeNumber().default(0).describe('events after this seq (default 0: from the first)'),
  limit: wholeNumber()
    .pipe(z.number().int().min(1, 'must be 1-10000').max(10_000, 'must be 1-10000'))
    .default(1000)
    .describe('at most this many events, 1-10000 (default 1000; ignored with follow)'),
  follow: z
    .enum(['true', 'false', '1', '0'])
    .transform((v) => v === 'true' || v === '1')
    .default(false)
    .describe('true: keep the answer open and send every event after since, then each new one, as NDJSON lines'),
});
export type EventsQuery = z.infer<typeof EventsQuery>;

export const EventsPage = z.object({
  events: z.array(ClusterEvent),
  /** Pass as `since` to read on. */
  next: z.number().int().nonnegative(),
});
export type EventsPage = z.infer<typeof EventsPage>;
