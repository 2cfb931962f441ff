/**
 * Tests that play several agents over one connection to an unauthenticated NATS: each call goes on the
 * subject of the node its body names (`node`), as that node's agent would send it. On an authenticated
 * server a connection may speak only for its own node; the attack tests show that.
 */
import type { z } from 'zod';
import { RpcClient, type CallOptions, type NatsConnection } from '@underlay/adapters';
import type { RpcMethod } from '@underlay/core';

export class AnyNodeRpc extends RpcClient {
  private readonly byNode = new Map<string, RpcClient>();
  constructor(
    private readonly conn: NatsConnection,
    node = 'test',
  ) {
    super(conn, node);
  }

  override call<S extends z.ZodType>(method: RpcMethod, req: unknown, resSchema: S, opts?: CallOptions): Promise<z.infer<S>> {
    const named = (req as { node?: unknown } | null)?.node;
    const node = typeof named === 'string' ? named : this.node;
    if (node === this.node) return super.call(method, req, resSchema, opts);
    let c = this.byNode.get(node);
    if (!c) this.byNode.set(node, (c = new RpcClient(this.conn, node)));
    return c.call(method, req, resSchema, opts);
  }
}
