import { connect, type NatsConnection } from '@nats-io/transport-node';

export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  // noAsyncTraces: nats-core otherwise builds Error objects (with stack traces) for every request.
  return connect({ servers: url.split(','), name, maxReconnectAttempts: -1, reconnectTimeWait: 250, noAsyncTraces: true });
}
export type { NatsConnection };
