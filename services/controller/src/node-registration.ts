/**
 * Node registration: an agent's report says hello, and the node is registered (or re-registered when what
 * identifies it changes) through the cluster writer. The report itself (status, lease) is kept by the node
 * directory (nodes.ts), not here.
 */
import { decideNodeHello, type NodeReport } from '@underlay/core';
import type { ClusterWriter, RequestContext } from './cluster-writer.js';

export class NodeRegistration {
  constructor(private readonly writer: Pick<ClusterWriter, 'run'>) {}

  async nodeReport(req: NodeReport, ctx: RequestContext) {
    await this.writer.run((s) => decideNodeHello(s, req), ctx);
    return {};
  }
}
