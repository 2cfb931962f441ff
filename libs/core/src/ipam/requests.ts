/**
 * What the IPAM decisions take: a node's pool and address requests, in the domain's own terms. The wire
 * schemas (protocol/ipam.ts) parse to exactly these shapes, checked at compile time; the decisions never
 * read the wire vocabulary.
 */

/** A node asks for a pool (Docker's RequestPool): a subnet in an address space, optionally narrowed to an --ip-range. */
export interface PoolRequest {
  node: string;
  space: string;
  /** The subnet (CIDR); "" when Docker asks for one of the driver's choosing (refused: underlay needs --subnet). */
  pool: string;
  /** --ip-range (CIDR), or "". */
  subPool: string;
  options: Record<string, string>;
  v6: boolean;
  /** Made by the agent per Docker request and reused across its retries: a repeat is the same request. */
  requestId?: string;
}

/** A node gives up its reference to a pool (Docker's ReleasePool). */
export interface PoolRelease {
  node: string;
  poolId: string;
}

/** A node asks for an address in a pool (Docker's RequestAddress): the gateway, an endpoint's or an --aux-address. */
export interface AddressRequest {
  node: string;
  poolId: string;
  /** "" or a bare IP. */
  address: string;
  /** Docker's options: the gateway request type (GATEWAY_REQUEST_TYPE) and the endpoint's MAC (MAC_OPTION). */
  options: Record<string, string>;
  /** Made by the agent per Docker request and reused across its retries: the allocation's handle. */
  requestId?: string;
  /**
   * For a requested address: an endpoint's static --ip or an --aux-address reservation. `host`: the node's own
   * address on a host_access network (dynamic, in the node's blocks; released by the node, never by the collector
   * while the node lives).
   */
  kind?: 'endpoint' | 'aux' | 'host';
}

/** A node releases an endpoint address it holds (Docker's ReleaseAddress). */
export interface AddressRelease {
  node: string;
  poolId: string;
  address: string;
  /** When given, the release only applies to that allocation (a late release of a reused address is ignored). */
  allocSeq?: number;
}

/** A node ties an address it holds to the Docker endpoint holding it (CreateEndpoint). */
export interface EndpointBinding {
  node: string;
  poolId: string;
  address: string;
  allocSeq?: number;
  endpointId: string;
  networkId: string;
  /**
   * The endpoint holds the address whatever the cluster has: an address free in the pool is allocated to the node
   * first (a running container's address the collector released), one the node holds is bound whatever its seq;
   * one another node holds is refused.
   */
  claim?: boolean;
}
