/**
 * Cluster events. Every change to cluster state is one of these, appended to the log in etcd
 * (the controller is the only writer) and then published on NATS JetStream. State = fold(events).
 */
import { z } from 'zod';
import { NetworkDefinition } from './network/definition.js';

const cidrString = z.string().min(1);
const addrString = z.string().min(1);

export const PoolCreated = z.object({
  type: z.literal('PoolCreated'),
  data: z.object({
    poolId: z.string(),
    space: z.string(),
    cidr: cidrString,
    /** --ip-range: addresses come only from here. */
    subPool: cidrString.optional(),
    v6: z.boolean(),
    options: z.record(z.string(), z.string()).default({}),
    /** Prefix length of the per-node blocks the pool is cut into. */
    blockPrefix: z.number().int().min(0).max(128),
    /** With strict affinity a node never borrows addresses from another node's block. */
    strictAffinity: z.boolean().default(false),
  }),
});

/** A node's Docker asked for the pool (created the network locally). Pools are shared by reference. */
export const PoolRefAdded = z.object({
  type: z.literal('PoolRefAdded'),
  data: z.object({ poolId: z.string(), node: z.string(), requestId: z.string().optional() }),
});

export const PoolRefRemoved = z.object({
  type: z.literal('PoolRefRemoved'),
  data: z.object({ poolId: z.string(), node: z.string() }),
});

export const PoolDeleted = z.object({
  type: z.literal('PoolDeleted'),
  data: z.object({ poolId: z.string() }),
});

export const AddressKind = z.enum(['endpoint', 'gateway', 'aux']);
export type AddressKind = z.infer<typeof AddressKind>;

export const AddressAllocated = z.object({
  type: z.literal('AddressAllocated'),
  data: z.object({
    poolId: z.string(),
    address: addrString,
    kind: AddressKind,
    node: z.string(),
    /** Ties repeated requests together (node + MAC); a repeat with the same handle gets the same address. */
    handle: z.string().optional(),
    /** True when the caller asked for this exact address (--ip / --gateway / --aux-address). */
    requested: z.boolean().default(false),
  }),
});

export const AddressReleased = z.object({
  type: z.literal('AddressReleased'),
  data: z.object({
    poolId: z.string(),
    address: addrString,
    node: z.string(),
    /** Sequence number of the AddressAllocated event being undone. */
    allocSeq: z.number().int().positive(),
    /** Why, when not released by its holder: `leak: <rule>`. */
    reason: z.string().optional(),
  }),
});

/** A node claims a block of a pool; it fills its own blocks first. */
export const BlockClaimed = z.object({
  type: z.literal('BlockClaimed'),
  data: z.object({ poolId: z.string(), block: cidrString, node: z.string() }),
});

export const BlockReleased = z.object({
  type: z.literal('BlockReleased'),
  data: z.object({ poolId: z.string(), block: cidrString, node: z.string() }),
});

/** The address is now held by a Docker endpoint (CreateEndpoint on that node). */
export const EndpointBound = z.object({
  type: z.literal('EndpointBound'),
  data: z.object({
    poolId: z.string(),
    address: addrString,
    allocSeq: z.number().int().positive(),
    endpointId: z.string(),
    networkId: z.string(),
    node: z.string(),
  }),
});

/** A Docker network on one node (each dockerd has its own network id), with the pools it uses. */
export const NetworkRecorded = z.object({
  type: z.literal('NetworkRecorded'),
  data: z.object({
    networkId: z.string(),
    node: z.string(),
    poolIds: z.array(z.string()),
    options: z.record(z.string(), z.string()).default({}),
  }),
});

/**
 * Docker's name of the network, learned from the Docker Engine API after CreateNetwork. `cluster` says
 * whether this Docker network is a member (origin or replica) of the cluster network of that name:
 * false when its definition differed (the agent then removes it); absent before cluster networks.
 */
export const NetworkNamed = z.object({
  type: z.literal('NetworkNamed'),
  data: z.object({ networkId: z.string(), name: z.string(), cluster: z.boolean().optional() }),
});

/** A cluster-wide network: every agent makes a replica of it in its Docker. */
export const ClusterNetworkCreated = z.object({
  type: z.literal('ClusterNetworkCreated'),
  data: z.object({
    name: z.string(),
    definition: NetworkDefinition,
    /** Where it was first created: a node's Docker network, or absent for `underlay network create`. */
    originNode: z.string().optional(),
    originNetworkId: z.string().optional(),
  }),
});

/** The cluster network is gone: every agent removes its replica (at once, or when it comes back). */
export const ClusterNetworkRemoved = z.object({
  type: z.literal('ClusterNetworkRemoved'),
  data: z.object({ name: z.string() }),
});

export const NetworkRemoved = z.object({
  type: z.literal('NetworkRemoved'),
  data: z.object({ networkId: z.string(), node: z.string() }),
});

/** A node agent registered, or its details changed (liveness itself is a lease kept in memory, not in the log). */
export const NodeRegistered = z.object({
  type: z.literal('NodeRegistered'),
  data: z.object({
    node: z.string(),
    address: z.string().optional(),
    version: z.string().optional(),
    /** The host's network interfaces (names), as the agent last registered them. */
    interfaces: z.array(z.string()).optional(),
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
  id: z.string(),
  /** RFC 3339 time at which the controller decided the event. */
  time: z.string(),
  /** Who caused it: `node:<name>`, `user:<name>` or `controller`. */
  actor: z.string(),
  /** W3C trace id of the request that caused it, when there was one. */
  traceId: z.string().optional(),
});

export const ClusterEvent = z.intersection(EventMeta, EventBody);
export type ClusterEvent = z.infer<typeof EventMeta> & EventBody;
export type EventOf<T extends EventType> = Extract<EventBody, { type: T }>;

export function parseEvent(raw: unknown): ClusterEvent {
  return ClusterEvent.parse(raw) as ClusterEvent;
}
