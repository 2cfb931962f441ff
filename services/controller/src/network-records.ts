/**
 * Networks: each host's Docker network recorded and named (agents, over NATS), and cluster networks defined
 * and removed once for every host (agents, and the HTTP API). Each one is a decision of core's network/ run
 * through the cluster writer (decide → commit → publish).
 */
import {
  CLUSTER_CHAIN,
  DEFAULT_POOL_LIMITS,
  committedHeads,
  hostChain,
  decideClusterNetworkCreate,
  decideClusterNetworkRemove,
  decideNetworkDefine,
  decideNetworkNamed,
  decideNetworkRecorded,
  decideNetworkRemoved,
  type ContainerLookup,
  type HeldLookup,
  type NetworkDefinitionInput,
  type NetworkNameReq,
  type NetworkRecordReq,
  type PoolLimits,
} from '@underlay/core';
import type { ClusterWriter, RequestContext } from './cluster-writer.js';

export class NetworkRecords {
  constructor(
    private readonly writer: Pick<ClusterWriter, 'run' | 'check' | 'committedSeq' | 'state'>,
    /** The largest pools a cluster network may define (--max-pool-prefix-v4/-v6). */
    private readonly poolLimits: PoolLimits = DEFAULT_POOL_LIMITS,
  ) {}

  networkRecord(req: NetworkRecordReq, ctx: RequestContext) {
    return this.writer.run((s) => decideNetworkRecorded(s, req), ctx);
  }
  /** The network's name (and, from agents that know cluster networks, its definition). */
  async networkName(req: NetworkNameReq, ctx: RequestContext): Promise<{ member: boolean; conflict?: string; seq: number; chains: Record<string, number> }> {
    const { definition } = req;
    const r = definition ? await this.writer.run((s) => decideNetworkDefine(s, { ...req, definition }), ctx) : await this.writer.run((s) => decideNetworkNamed(s, req), ctx).then(() => ({ member: false }));
    return { ...r, ...this.headsFor(req.node) };
  }
  /**
   * Where a change asked by `node` was recorded, and the chains its replica reconcile reads (the cluster's and the
   * host's), with how far it must read each to have seen the change.
   */
  private headsFor(node: string): { seq: number; chains: Record<string, number> } {
    const seq = this.writer.committedSeq;
    return { seq, chains: committedHeads(this.writer.state, [CLUSTER_CHAIN, hostChain(node)], seq) };
  }
  async networkRemove(req: { networkId: string; node: string; cluster?: boolean; dryRun?: boolean }, ctx: RequestContext, who?: ContainerLookup, held?: HeldLookup): Promise<{ seq?: number; chains?: Record<string, number> }> {
    if (req.dryRun) {
      // Throws the refusal, if any, without deciding anything.
      await this.writer.check((s) => decideNetworkRemoved(s, req, who, held));
      return {};
    }
    await this.writer.run((s) => decideNetworkRemoved(s, req, who, held), ctx);
    return this.headsFor(req.node);
  }
  clusterNetworkCreate(req: { name: string; definition: NetworkDefinitionInput }, ctx: RequestContext) {
    return this.writer.run((s) => decideClusterNetworkCreate(s, req, this.poolLimits), ctx);
  }
  clusterNetworkRemove(req: { name: string }, ctx: RequestContext, who?: ContainerLookup, held?: HeldLookup) {
    return this.writer.run((s) => decideClusterNetworkRemove(s, req, who, held), ctx);
  }
}
