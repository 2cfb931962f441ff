/**
 * Cluster events. Every change to cluster state is one of these, appended to the log in etcd
 * (the controller is the only writer) and then published on NATS JetStream. State = fold(events).
 */
import { z } from 'zod';
import { NetworkDefinition } from './network-definition.js';
import { HANDLE_MAX, LIMITS, optionMap, text } from '../limits.js';

// Events are written by the controller only, from requests bounded by the same LIMITS: every event it
// makes fits these, and an agent reading the stream refuses anything larger.
const cidrString = text(LIMITS.address).min(1);
const addrString = text(LIMITS.address).min(1);
const poolId = text(LIMITS.poolId);
const node = text(LIMITS.nodeName);
const dockerId = text(LIMITS.dockerId);
const name = text(LIMITS.name);
const allocSeq = z.number().int().positive();

export const PoolCreated = z.object({
  type: z.literal('PoolCreated'),
  data: z.object({
    poolId,
    space: name,
    cidr: cidrString,
    /** --ip-range: addresses come only from here. */
    subPool: cidrString.optional(),
    v6: z.boolean(),
    options: optionMap().default({}),
    /** Prefix length of the per-node blocks the pool is cut into. */
    blockPrefix: z.number().int().min(0).max(128),
    /** With strict affinity a node never borrows addresses from another node's block. */
    strictAffinity: z.boolean().default(false),
  }),
});

/** A node's Docker asked for the pool (created the network locally). Pools are shared by reference. */
export const PoolRefAdded = z.object({
  type: z.literal('PoolRefAdded'),
  data: z.object({ poolId, node, requestId: text(LIMITS.requestId).optional() }),
});

export const PoolRefRemoved = z.object({
  type: z.literal('PoolRefRemoved'),
  data: z.object({ poolId, node }),
});

export const PoolDeleted = z.object({
  type: z.literal('PoolDeleted'),
  data: z.object({ poolId }),
});

/** `host`: a host's own address on a network with host_access (its shim link; never a container's). */
export const AddressKind = z.enum(['endpoint', 'gateway', 'aux', 'host']);
export type AddressKind = z.infer<typeof AddressKind>;

export const AddressAllocated = z.object({
  type: z.literal('AddressAllocated'),
  data: z.object({
    poolId,
    address: addrString,
    kind: AddressKind,
    node,
    /** Ties repeated requests together (node + MAC); a repeat with the same handle gets the same address. */
    handle: text(HANDLE_MAX).optional(),
    /** True when the caller asked for this exact address (--ip / --gateway / --aux-address). */
    requested: z.boolean().default(false),
  }),
});

export const AddressReleased = z.object({
  type: z.literal('AddressReleased'),
  data: z.object({
    poolId,
    address: addrString,
    node,
    /** Sequence number of the AddressAllocated event being undone. */
    allocSeq,
    /** Why, when not released by its holder: `leak: <rule>`. */
    reason: name.optional(),
  }),
});

/** A node claims a block of a pool; it fills its own blocks first. */
export const BlockClaimed = z.object({
  type: z.literal('BlockClaimed'),
  data: z.object({ poolId, block: cidrString, node }),
});

export const BlockReleased = z.object({
  type: z.literal('BlockReleased'),
  data: z.object({ poolId, block: cidrString, node }),
});

/** The address is now held by a Docker endpoint (CreateEndpoint on that node). */
export const EndpointBound = z.object({
  type: z.literal('EndpointBound'),
  data: z.object({
    poolId,
    address: addrString,
    allocSeq,
    endpointId: dockerId,
    networkId: dockerId,
    node,
  }),
});

/** A Docker network on one node (each dockerd has its own network id), with the pools it uses. */
export const NetworkRecorded = z.object({
  type: z.literal('NetworkRecorded'),
  data: z.object({
    networkId: dockerId,
    node,
    poolIds: z.array(poolId).max(LIMITS.poolIds),
    options: optionMap().default({}),
  }),
});

/**
 * Docker's name of the network, learned from the Docker Engine API after CreateNetwork. `cluster` says
 * whether this Docker network is a member (origin or replica) of the cluster network of that name:
 * false when its definition differed (the agent then removes it); absent before cluster networks.
 */
export const NetworkNamed = z.object({
  type: z.literal('NetworkNamed'),
  data: z.object({ networkId: dockerId, name, cluster: z.boolean().optional() }),
});

/** A cluster-wide network: every agent makes a replica of it in its Docker. */
export const ClusterNetworkCreated = z.object({
  type: z.literal('ClusterNetworkCreated'),
  data: z.object({
    name,
    definition: NetworkDefinition,
    /** Where it was first created: a node's Docker network, or absent for `underlay network create`. */
    originNode: node.optional(),
    originNetworkId: dockerId.optional(),
  }),
});

/** The cluster network is gone: every agent removes its replica (at once, or when it comes back). */
export const ClusterNetworkRemoved = z.object({
  type: z.literal('ClusterNetworkRemoved'),
  data: z.object({ name }),
});

export const NetworkRemoved = z.object({
  type: z.literal('NetworkRemoved'),
  data: z.object({ networkId: dockerId, node }),
});

/** A node agent registered, or its details changed (liveness itself is a lease kept in memory, not in the log). */
export const NodeRegistered = z.object({
  type: z.literal('NodeRegistered'),
  data: z.object({
    node,
    address: text(LIMITS.hostAddress).optional(),
    version: text(LIMITS.version).optional(),
    /** The host's network interfaces (names), as the agent last registered them. */
    interfaces: z.array(text(LIMITS.ifName)).max(LIMITS.nodeInterfaces).optional(),
  }),
});

export const EventBody = z.discriminatedUnion('type', [
  PoolCreated,
  PoolRefAdded,
  PoolRefRemoved,
  PoolDeleted,
  AddressAllocated,
  AddressReleased,
  BlockClaimed,
  BlockReleased,
  EndpointBound,
  NodeRegistered,
  NetworkRecorded,
  NetworkNamed,
  NetworkRemoved,
  ClusterNetworkCreated,
  ClusterNetworkRemoved,
]);
export type EventBody = z.infer<typeof EventBody>;
export type EventType = EventBody['type'];
export const EventMeta = z.object({
  /** Position in the log: 1, 2, 3 … with no gaps. Also the JetStream message id. */
  seq: z.number().int().positive(),
  /** Unique id (uuid). */
  id: text(LIMITS.eventMeta),
  /** RFC 3339 time at which the controller decided the event. */
  time: text(LIMITS.eventMeta),
  /** Who caused it: `node:<name>`, `user:<name>` or `controller`. */
  actor: text(LIMITS.actor),
  /** W3C trace id of the request that caused it, when there was one. */
  traceId: text(LIMITS.eventMeta).optional(),
  /** The chain it belongs to (state/chains.ts: `c`, `h.<node>`, `p.<pool>`); absent on events recorded before chains. */
  chain: text(LIMITS.chain).optional(),
  /** No event of the same chain lies strictly between `prev` and `seq` (0: none before it). */
  prev: z.number().int().nonnegative().optional(),
});

export type ClusterEvent = z.infer<typeof EventMeta> & EventBody;
/**
 * One object schema per event type (the meta's fields, then the body's), chosen by `type`: the same rule as the meta
 * and the body intersected, without zod's merge of the two results, which was a fifth of what an agent allocated per
 * event (bench:scale's heap profile of 1,000 simulated agents).
 */
export const ClusterEvent = z.discriminatedUnion(
  'type',
  EventBody.options.map((body) => EventMeta.extend(body.shape)) as unknown as [z.ZodObject, ...z.ZodObject[]],
) as unknown as z.ZodType<ClusterEvent>;
export type EventOf<T extends EventType> = Extract<EventBody, { type: T }>;

export function parseEvent(raw: unknown): ClusterEvent {
  return ClusterEvent.parse(raw) as ClusterEvent;
}
