/**
 * @underlay/core: pure, no I/O. Layers, bottom to top (test/unit/core-layers.test.ts checks every import):
 * base (the files here: errors, ip, options, limits, backoff, trace) → state/ (the cluster state, its events,
 * the fold, snapshots, network definitions) → decisions (ipam/, network/, node/, routes/, which never import
 * each other nor the wire, and take their own input types) → protocol/ (wire schemas, which parse to the
 * decisions' inputs, and the API's views of the state).
 */
export * from './errors.js';
export * from './ip.js';
export * from './state/events.js';
export * from './options.js';
export * from './state/cluster-state.js';
export * from './state/handle-index.js';
export * from './state/fold.js';
export * from './state/chains.js';
export { holdsIn } from './state/holdings.js';
export * from './state/decision.js';
export * from './state/pool-rules.js';
export * from './state/network-owner.js';
export * from './ipam/requests.js';
export * from './ipam/decide.js';
export * from './state/engine.js';
export * from './ipam/leaks.js';
export * from './ipam/check.js';
export * from './state/snapshot.js';
export * from './state/network-definition.js';
export * from './network/decide.js';
export * from './node/interfaces.js';
export * from './node/decide.js';
export * from './protocol/ipam.js';
export * from './protocol/rpc.js';
export * from './limits.js';
export * from './protocol/subjects.js';
export * from './protocol/stream.js';
export * as plugin from './protocol/plugin.js';
export * from './trace.js';
export * from './routes/types.js';
export * from './routes/desired.js';
export * from './routes/host-access.js';
export * from './protocol/paging.js';
export * from './protocol/api.js';
export * from './protocol/views.js';
export * from './backoff.js';
