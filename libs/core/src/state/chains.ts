/**
 * Interest-based delivery: every event belongs to one **chain**, and an agent follows only the chains it needs.
 *
 * - `c`: cluster-wide definitions every agent holds: nodes (next hops), cluster networks (replicas).
 * - `h.<node token>`: one host's Docker network records (recorded, named, removed); only that host reads them.
 * - `p.<pool token>`: everything about one pool: its creation, references, blocks, allocations, releases, bindings.
 *   An agent follows the pools its networks use (routes to other hosts' blocks of those pools included); an agent
 *   uninvolved in a network receives none of its pool's events.
 *
 * A chain is also the middle of the event's subject (`underlay.events.<chain>.<type>`), so its tokens are NATS subject
 * tokens. Each event records its chain and `prev`: no event of the same chain lies strictly between `prev` and its own
 * seq (the seq of the chain's previous event, or a lower bound of it after an upgrade), so a reader of some chains only
 * finds its gaps per chain. The chains of the pools hold no reference to each other: the state of one pool is the fold
 * of its chain alone, which is what lets an agent fold only some of them (`applyInterest`).
 */
import type { ClusterEvent, EventBody } from './events.js';
import { chainHead, type ClusterState } from './cluster-state.js';

export const CLUSTER_CHAIN = 'c';

/**
 * One subject token for any text: characters other than letters, digits, `-`, `_`, `/` and `:` become `~` and
 * their code in hex, 2 or 4 digits (`~2e` for `.`, `~u2603` for ☃). One to one, and never `.`, `*`, `>` or spaces.
 */
export function subjectToken(text: string): string {
  let out = '';
  for (const ch of text) {
    if (/^[A-Za-z0-9_\-/:]$/.test(ch)) out += ch;
    else {
      const code = ch.codePointAt(0)!;
      out += code < 0x100 ? `~${code.toString(16).padStart(2, '0')}` : `~u${code.toString(16).padStart(4, '0')}`;
    }
  }
  return out;
}

export const poolChain = (poolId: string): string => `p.${subjectToken(poolId)}`;
export const hostChain = (node: string): string => `h.${subjectToken(node)}`;

/**
 * The chain of an event. `networkNode` answers the node of a Docker network known before the event (NetworkNamed
 * carries only the network's id); a network it does not know puts the event on the cluster chain.
 */
export function chainOf(body: EventBody, networkNode: (networkId: string) => string | undefined = () => undefined): string {
  switch (body.type) {
    case 'PoolCreated':
    case 'PoolRefAdded':
    case 'PoolRefRemoved':
    case 'PoolDeleted':
    case 'BlockClaimed':
    case 'BlockReleased':
    case 'AddressAllocated':
    case 'AddressReleased':
    case 'EndpointBound':
      return poolChain(body.data.poolId);
    case 'NetworkRecorded':
    case 'NetworkRemoved':
      return hostChain(body.data.node);
    case 'NetworkNamed': {
      const node = networkNode(body.data.networkId);
      return node === undefined ? CLUSTER_CHAIN : hostChain(node);
    }
    case 'NodeRegistered':
    case 'ClusterNetworkCreated':
    case 'ClusterNetworkRemoved':
      return CLUSTER_CHAIN;
  }
}

/** The chain an event was stamped with, or (an event recorded before chains) the one it belongs to without state. */
export const chainOfEvent = (ev: ClusterEvent): string => ev.chain ?? chainOf(ev);

/**
 * The heads of `chains` as far as the log is durable: a chain's event after the committed `seq` (decided, not yet
 * committed) is answered as `seq`, so a reader reads up to it and stands there.
 */
export function committedHeads(state: ClusterState, chains: readonly string[], seq: number): Record<string, number> {
  return Object.fromEntries(chains.map((c) => [c, Math.min(chainHead(state, c), seq)]));
}

/**
 * Replaces the part of `state` that `chain` folds to with that part of `from` (a reader that fell behind the trimmed
 * log on one chain takes it from the latest snapshot; its other chains stay where they are: chains are independent).
 */
export function takeChain(state: ClusterState, from: ClusterState, chain: string): void {
  if (chain === CLUSTER_CHAIN) {
    state.nodes.clear();
    for (const [k, v] of from.nodes) state.nodes.set(k, v);
    state.clusterNetworks.clear();
    for (const [k, v] of from.clusterNetworks) state.clusterNetworks.set(k, v);
  } else if (chain.startsWith('h.')) {
    for (const [id, n] of [...state.networks]) if (hostChain(n.node) === chain) state.networks.delete(id);
    for (const [id, n] of from.networks) if (hostChain(n.node) === chain) state.networks.set(id, n);
  } else {
    for (const id of [...state.pools.keys()]) if (poolChain(id) === chain) state.pools.delete(id);
    for (const [id, p] of from.pools) if (poolChain(id) === chain) state.pools.set(id, p);
  }
  state.chains.set(chain, chainHead(from, chain));
  state.seq = Math.max(state.seq, from.seq);
}
