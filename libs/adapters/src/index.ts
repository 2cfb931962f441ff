export * from './etcd/keys.js';
export * from './etcd/eventlog.js';
export * from './nats/connect.js';
export * from './nats/rpc.js';
export * from './nats/events.js';
export { openLinkOps, NetlinkError } from './netlink/index.js';
export type { LinkOps as NetlinkLinkOps, LinkInfo } from './netlink/index.js';
export * from './etcd/snapshots.js';
export * from './nats/consumer.js';
