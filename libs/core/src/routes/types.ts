/** A route the agent wants in its host's kernel (dst CIDR via a next hop, out of a device). */
export interface DesiredRoute {
  /** CIDR: another node's block, or a /32 (/128) for an address borrowed outside its owner's block. */
  dst: string;
  /** Next hop: the owning node's address. */
  via: string;
  /** Outgoing device: the network's parent on this host. */
  dev: string;
}

/** The routing-protocol number on every route underlay installs (rtnetlink rtm_protocol; see docs/ARCHITECTURE.md). */
export const UNDERLAY_RT_PROTO = 201;
/**
 * The routing-protocol number of host access routes (`<block> dev ulh… proto 202`): another number than the ipvlan
 * L3 routes', so neither reconcile ever deletes the other's routes.
 */
export const HOST_ACCESS_RT_PROTO = 202;
