/**
 * NATS subjects and stream names. Keep docs/ARCHITECTURE.md ("NATS subjects", "Security model") in step with
 * this file.
 *
 * Every request subject carries the caller's node (`underlay.rpc.v1.<node token>.<group>.<name>`), so NATS
 * itself, through each node's user permissions, decides who may speak for a node: the controller takes the
 * caller from the subject, never from the body.
 */
import { CLUSTER_CHAIN, hostChain } from '../state/chains.js';

export const SUBJECT_PREFIX = 'underlay';

/** Request/reply methods served by the controller (queue group `controllers`): `<group>.<name>`. */
export const rpc = {
  requestPool: 'ipam.requestPool',
  releasePool: 'ipam.releasePool',
  requestAddress: 'ipam.requestAddress',
  releaseAddress: 'ipam.releaseAddress',
  bindEndpoint: 'ipam.bindEndpoint',
  networkRecord: 'network.record',
  networkName: 'network.name',
  networkRemove: 'network.remove',
  /** An agent's liveness and the endpoints it holds (every --report-interval). */
  nodeReport: 'node.report',
  /** Read committed events from the log (for consumers that see a gap). */
  readEvents: 'events.read',
  /** The seq of the last committed event (an agent knows when it has caught up). */
  eventsHead: 'events.head',
  /** The controller (re)creates the caller's own JetStream consumer, starting after a given event seq. */
  eventsConsumer: 'events.consumer',
  /** One part of the latest state snapshot (an agent starts from it when the log behind it was trimmed). */
  snapshotRead: 'state.snapshot',
  /** Where each pool's allocations lie in the latest snapshot (an agent reads only the pools it follows). */
  snapshotIndex: 'state.snapshotIndex',
  /** A range of characters of the latest snapshot (its head, or one pool's allocations). */
  snapshotRange: 'state.snapshotRange',
} as const;
export type RpcMethod = keyof typeof rpc;
export const CONTROLLER_QUEUE = 'controllers';

const RPC_ROOT = 'underlay.rpc.v1';

/**
 * A node name as one subject token. Node names may contain '.', which separates subject tokens; '~' is not
 * allowed in node names, so the mapping is one to one.
 */
export const nodeToken = (node: string): string => node.replaceAll('.', '~');
export const nodeFromToken = (token: string): string => token.replaceAll('~', '.');

/** The subject a node sends `method` on. */
export const rpcSubject = (method: RpcMethod, node: string): string => `${RPC_ROOT}.${nodeToken(node)}.${rpc[method]}`;
/** The subject controllers serve `method` on (any node). */
export const rpcServeSubject = (method: RpcMethod): string => `${RPC_ROOT}.*.${rpc[method]}`;
/** Every request subject of one node (what its credentials may publish). */
export const rpcNodeSubjects = (node: string): string => `${RPC_ROOT}.${nodeToken(node)}.>`;
/** The node a request subject names, or undefined for any other subject. */
export function nodeOfRpcSubject(subject: string): string | undefined {
  if (!subject.startsWith(`${RPC_ROOT}.`)) return undefined;
  const token = subject.slice(RPC_ROOT.length + 1).split('.')[0];
  return token ? nodeFromToken(token) : undefined;
}

/** Replies to a node's requests arrive under this prefix (its credentials may subscribe only there). */
export const nodeInboxPrefix = (node: string): string => `_UL_INBOX.${nodeToken(node)}`;

/** JetStream stream holding every committed event, one subject per chain and event type. */
export const EVENTS_STREAM = 'UNDERLAY_EVENTS';
/** An event's subject: its chain (state/chains.ts: `c`, `h.<node>`, `p.<pool>`) and its type. */
export const eventSubject = (chain: string, type: string): string => `underlay.events.${chain}.${type}`;
/** Every event of one chain (a subscription's subject). */
export const chainSubject = (chain: string): string => `underlay.events.${chain}.*`;
export const EVENTS_WILDCARD = 'underlay.events.>';
/**
 * What a node may subscribe to: the cluster chain, its own host chain and the pools' chains (it subscribes to the
 * pools its networks use; reading another pool's events shows it nothing `events.read` would not).
 */
export const nodeEventSubjects = (node: string): string[] => [chainSubject(CLUSTER_CHAIN), chainSubject(hostChain(node)), 'underlay.events.p.>'];
/** A node's own pull consumer on the stream, made by the controller; the node may only read it. */
export const nodeConsumerName = (node: string): string => `agent-${nodeToken(node)}`;
/** The JetStream API subjects a node needs to read its consumer. */
export const nodeConsumerApiSubjects = (node: string): string[] => [
  `$JS.API.CONSUMER.INFO.${EVENTS_STREAM}.${nodeConsumerName(node)}`,
  `$JS.API.CONSUMER.MSG.NEXT.${EVENTS_STREAM}.${nodeConsumerName(node)}`,
];

/** NATS headers carried on every message. */
export const headers = {
  traceparent: 'traceparent',
  tracestate: 'tracestate',
  eventSeq: 'Underlay-Seq',
} as const;
