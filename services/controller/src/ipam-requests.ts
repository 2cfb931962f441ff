/**
 * The Docker IPAM driver's requests, as agents send them over NATS: pools, addresses and endpoint bindings.
 * Each one is a decision of core's ipam/ run through the cluster writer (decide → commit → publish).
 */
import {
  DEFAULT_POOL_LIMITS,
  decideBindEndpoint,
  decideReleaseAddress,
  decideReleasePool,
  decideRequestAddress,
  decideRequestPool,
  type BindEndpointReq,
  type PoolLimits,
  type ReleaseAddressReq,
  type ReleasePoolReq,
  type RequestAddressReq,
  type RequestPoolReq,
} from '@underlay/core';
import type { ClusterWriter, RequestContext } from './cluster-writer.js';

export class IpamRequests {
  constructor(
    private readonly writer: Pick<ClusterWriter, 'run'>,
    /** The largest pools handed out (--max-pool-prefix-v4/-v6). */
    private readonly poolLimits: PoolLimits = DEFAULT_POOL_LIMITS,
  ) {}

  requestPool(req: RequestPoolReq, ctx: RequestContext) {
    return this.writer.run((s) => decideRequestPool(s, req, this.poolLimits), ctx);
  }
  releasePool(req: ReleasePoolReq, ctx: RequestContext) {
    return this.writer.run((s) => decideReleasePool(s, req), ctx);
  }
  requestAddress(req: RequestAddressReq, ctx: RequestContext) {
    return this.writer.run((s) => decideRequestAddress(s, req), ctx);
  }
  releaseAddress(req: ReleaseAddressReq, ctx: RequestContext) {
    return this.writer.run((s) => decideReleaseAddress(s, req), ctx);
  }
  bindEndpoint(req: BindEndpointReq, ctx: RequestContext) {
    return this.writer.run((s) => decideBindEndpoint(s, req), ctx);
  }
}
