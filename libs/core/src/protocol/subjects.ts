/** NATS subjects and stream names. Keep docs/ARCHITECTURE.md in step with this file. */
export const SUBJECT_PREFIX = 'underlay';

/** Request/reply subjects served by the controller (queue group `controllers`). */
export const rpc = {
  requestPool: 'underlay.rpc.v1.ipam.requestPool',
  releasePool: 'underlay.rpc.v1.ipam.releasePool',
  requestAddress: 'underlay.rpc.v1.ipam.requestAddress',
  releaseAddress: 'underlay.rpc.v1.ipam.releaseAddress',
  bindEndpoint: 'underlay.rpc.v1.ipam.bindEndpoint',
  networkRecord: 'underlay.rpc.v1.network.record',
  networkName: 'underlay.rpc.v1.network.name',
  networkRemove: 'underlay.rpc.v1.network.remove',
  /** An agent's liveness and the endpoints it holds (every --report-interval). */
  nodeReport: 'underlay.rpc.v1.node.report',
  /** Read committed events from the log (for consumers that see a gap). */
  readEvents: 'underlay.rpc.v1.events.read',
  /** The seq of the last committed event (an agent knows when it has caught up). */
  eventsHead: 'underlay.rpc.v1.events.head',
} as const;
export type RpcMethod = keyof typeof rpc;
export const CONTROLLER_QUEUE = 'controllers';

/** JetStream stream holding every committed event, one subject per event type. */
export const EVENTS_STREAM = 'UNDERLAY_EVENTS';
export const eventSubject = (type: string): string => `underlay.events.${type}`;
export const EVENTS_WILDCARD = 'underlay.events.>';

/** NATS headers carried on every message. */
export const headers = {
  traceparent: 'traceparent',
  tracestate: 'tracestate',
  eventSeq: 'Underlay-Seq',
} as const;
