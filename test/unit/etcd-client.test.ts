/**
 * The etcd client's construction (libs/adapters/src/etcd/client.ts): what every member's gRPC channel is given.
 * The flow-control window is behaviour a timing test would show (a 1M-allocation snapshot read at cold start waited
 * ~1 s on 64 KiB windows; bench:scale's cold start shows it), so this checks that the channels get it.
 */
import { ETCD_FLOW_CONTROL_WINDOW, ETCD_MAX_RECEIVE_BYTES, READ_PARTS_AT_ONCE, SNAPSHOT_CHUNK_BYTES, createEtcdClient } from '@underlay/adapters';

describe('the etcd client', () => {
  it('gives every member a large HTTP/2 flow-control window and the receive ceiling', () => {
    const client = createEtcdClient({ endpoints: ['http://127.0.0.1:1', 'http://127.0.0.1:2'] });
    try {
      const pool = (client as unknown as { pool: { options: { grpcOptions?: Record<string, unknown> } } }).pool;
      expect(pool.options.grpcOptions).toEqual({ 'grpc.max_receive_message_length': ETCD_MAX_RECEIVE_BYTES, 'grpc-node.flow_control_window': ETCD_FLOW_CONTROL_WINDOW });
      // Room for the snapshot parts read at once (HTTP/2's default is 64 KiB).
      expect(ETCD_FLOW_CONTROL_WINDOW).toBeGreaterThanOrEqual(READ_PARTS_AT_ONCE * SNAPSHOT_CHUNK_BYTES);
    } finally {
      client.close();
    }
  });
});
