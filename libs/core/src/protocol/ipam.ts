/**
 * The IPAM requests an agent sends to the controller over NATS request/reply, and the answers.
 * Subjects are in ./subjects.ts. Every message is validated with these schemas on both ends.
 */
import { z } from 'zod';

export const NodeName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a node name is 1-63 letters, digits, "_", "." or "-"');

/** Docker's IpamDriver option that marks the gateway request. */
export const GATEWAY_REQUEST_TYPE = 'com.docker.network.gateway';
export const MAC_OPTION = 'com.docker.network.endpoint.macaddress';

export const RequestPoolReq = z.object({
  node: NodeName,
  space: z.string().min(1),
  pool: z.string(),
  subPool: z.string().default(''),
  options: z.record(z.string(), z.string()).default({}),
  v6: z.boolean().default(false),
  /** Made by the agent per Docker request and reused across its retries: a repeat is the same request. */
  requestId: z.string().min(1).max(64).optional(),
});
export type RequestPoolReq = z.infer<typeof RequestPoolReq>;
export const RequestPoolRes = z.object({ poolId: z.string(), pool: z.string(), data: z.record(z.string(), z.string()).default({}) });
export type RequestPoolRes = z.infer<typeof RequestPoolRes>;

export const ReleasePoolReq = z.object({ node: NodeName, poolId: z.string().min(1) });
export type ReleasePoolReq = z.infer<typeof ReleasePoolReq>;

export const RequestAddressReq = z.object({
  node: NodeName,
  poolId: z.string().min(1),
  /** "" or a bare IP (Docker sends no mask). */
  address: z.string().default(''),
  options: z.record(z.string(), z.string()).default({}),
  /** Made by the agent per Docker request and reused across its retries: the allocation's handle. */
  requestId: z.string().min(1).max(64).optional(),
  /**
   * For a requested address: an endpoint's static --ip, or an --aux-address reservation (Docker sends both with no
   * options; the agent tells them apart by call order). Without it, a request with a MAC is an endpoint's.
   */
  kind: z.enum(['endpoint', 'aux']).optional(),
});
export type RequestAddressReq = z.infer<typeof RequestAddressReq>;
export const RequestAddressRes = z.object({
  /** CIDR: the address with the pool's prefix length. */
  address: z.string(),
  /** Sequence number of the allocation, to be carried by its release. */
  allocSeq: z.number().int().nonnegative(),
});
export type RequestAddressRes = z.infer<typeof RequestAddressRes>;

export const ReleaseAddressReq = z.object({
  node: NodeName,
  poolId: z.string().min(1),
  address: z.string().min(1),
  /** When given, the release only applies to that allocation (a late release of a reused address is ignored). */
  allocSeq: z.number().int().positive().optional(),
});
export type ReleaseAddressReq = z.infer<typeof ReleaseAddressReq>;

export const EmptyRes = z.object({});

/** CreateEndpoint: tie an allocated address to the Docker endpoint holding it. */
export const BindEndpointReq = z.object({
  node: NodeName,
  poolId: z.string().min(1),
  address: z.string().min(1),
  allocSeq: z.number().int().positive().optional(),
  endpointId: z.string().min(1),
  networkId: z.string().min(1),
});
export type BindEndpointReq = z.infer<typeof BindEndpointReq>;
export const BindEndpointRes = z.object({ bound: z.boolean() });

export const NodeHello = z.object({
  node: NodeName,
  address: z.string().optional(),
  version: z.string().optional(),
});
export type NodeHello = z.infer<typeof NodeHello>;

/** An agent's periodic report: it is alive, and these are every endpoint its Docker holds now. */
export const NodeReport = NodeHello.extend({
  endpoints: z.array(z.string()),
});
export type NodeReport = z.infer<typeof NodeReport>;

/** CreateNetwork on a node: the Docker network and the pools it uses. */
export const NetworkRecordReq = z.object({
  node: NodeName,
  networkId: z.string().min(1),
  poolIds: z.array(z.string()),
  options: z.record(z.string(), z.string()).default({}),
});
export type NetworkRecordReq = z.infer<typeof NetworkRecordReq>;
export const NetworkNameReq = z.object({ node: NodeName, networkId: z.string().min(1), name: z.string().min(1) });
export const NetworkRemoveReq = z.object({ node: NodeName, networkId: z.string().min(1) });
