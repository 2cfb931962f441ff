/**
 * Rules about pools that more than one decision folder enforces (ipam/ when Docker asks for a pool, network/
 * when a cluster network is defined): the --ipam-opt names, the size limits and the overlap check. Pure.
 */
import { InvalidArgumentError } from '../errors.js';
import { type Cidr, formatCidr, overlaps } from '../ip.js';
import type { ClusterState, Pool } from './cluster-state.js';

/** `--ipam-opt space=NAME` places a pool in its own address space (the same subnet on two VLANs). */
export const SPACE_OPTION = 'space';
/** `--ipam-opt block_size=26`: prefix length of the per-node blocks (default /26 for IPv4, /122 for IPv6). */
export const BLOCK_SIZE_OPTION = 'block_size';
/** `--ipam-opt strict_affinity=true`: a node never borrows from another node's block. */
export const STRICT_AFFINITY_OPTION = 'strict_affinity';
/**
 * `--ipam-opt sticky=true`: a container re-created with the same name on a network of this pool gets its former
 * address (and, on macvlan, a MAC derived from the network's and the container's names) back (node-agent's
 * driver/sticky.ts).
 */
export const STICKY_OPTION = 'sticky';
export const DEFAULT_BLOCK_PREFIX = { 4: 26, 6: 122 } as const;

/**
 * The largest pools the controller hands out, as the shortest prefix length allowed per family (its
 * --max-pool-prefix-v4 and --max-pool-prefix-v6). A pool is one subnet that every host shares: a /1 would
 * claim half of the IPv4 space for one network.
 */
export interface PoolLimits {
  maxPoolPrefixV4: number;
  maxPoolPrefixV6: number;
}
export const DEFAULT_POOL_LIMITS: Readonly<PoolLimits> = { maxPoolPrefixV4: 8, maxPoolPrefixV6: 48 };
const POOL_LIMIT_FLAG = { 4: '--max-pool-prefix-v4', 6: '--max-pool-prefix-v6' } as const;
const poolLimit = (limits: PoolLimits, family: 4 | 6): number => (family === 4 ? limits.maxPoolPrefixV4 : limits.maxPoolPrefixV6);

/** Refuses a subnet larger than the limit (a prefix shorter than the family's maximum pool prefix). */
export function checkPoolSize(cidr: Cidr, limits: PoolLimits = DEFAULT_POOL_LIMITS): void {
  const limit = poolLimit(limits, cidr.family);
  if (cidr.prefix < limit) {
    throw new InvalidArgumentError(
      `pool ${formatCidr(cidr)} is larger than the limit /${limit} (${POOL_LIMIT_FLAG[cidr.family]}): use a smaller --subnet, or raise the controller's ${POOL_LIMIT_FLAG[cidr.family]}`,
    );
  }
}

/**
 * `--ipam-opt block_size=N`: a prefix length from the largest pool's (the limit: a block is never larger
 * than a pool may be) to the family's bits (one address per block). A block larger than its pool is the
 * whole pool.
 */
export function blockPrefixOption(options: Readonly<Record<string, string>>, family: 4 | 6, limits: PoolLimits = DEFAULT_POOL_LIMITS): number {
  const raw = options[BLOCK_SIZE_OPTION];
  if (raw === undefined || raw === '') return DEFAULT_BLOCK_PREFIX[family];
  const m = /^\/?(\d{1,3})$/.exec(raw.trim());
  const min = poolLimit(limits, family);
  const max = family === 4 ? 32 : 128;
  if (!m || Number(m[1]) < min || Number(m[1]) > max) {
    throw new InvalidArgumentError(
      `--ipam-opt ${BLOCK_SIZE_OPTION}=${raw.slice(0, 32)} is not valid: give a prefix length from ${min} to ${max} for IPv${family}, for example ${BLOCK_SIZE_OPTION}=${DEFAULT_BLOCK_PREFIX[family]}`,
    );
  }
  return Number(m[1]);
}

/** A true/false --ipam-opt (`strict_affinity`, `sticky`): absent, empty or `false` is false; anything else but `true` is refused. */
export function booleanPoolOption(options: Readonly<Record<string, string>>, key: string): boolean {
  const raw = options[key];
  if (raw === undefined || raw === '' || raw === 'false') return false;
  if (raw === 'true') return true;
  throw new InvalidArgumentError(`--ipam-opt ${key}=${raw.slice(0, 32)} is not valid: use ${key}=true or ${key}=false (the default)`);
}

/** Every --ipam-opt underlay reads, checked (when a pool is asked for and when a cluster network is defined). */
export function checkPoolOptions(options: Readonly<Record<string, string>>, family: 4 | 6, limits: PoolLimits = DEFAULT_POOL_LIMITS): void {
  blockPrefixOption(options, family, limits);
  booleanPoolOption(options, STRICT_AFFINITY_OPTION);
  booleanPoolOption(options, STICKY_OPTION);
}

export const poolIdOf = (space: string, cidr: string): string => `${space}/${cidr}`;

/** A pool of that address space overlapping `cidr`, if any. */
export function overlappingPool(state: ClusterState, space: string, cidr: Cidr): Pool | undefined {
  for (const p of state.pools.values()) if (p.space === space && overlaps(p.cidr, cidr)) return p;
  return undefined;
}

/** What an overlap refusal tells the user to do. */
export const OVERLAP_HINT = 'use another subnet, or --ipam-opt space=NAME for the same subnet on another VLAN';

/** `network "n1" (on h1, h2)` for the networks using a pool (only those on `onNode` when given), for messages. */
export function networksUsing(state: ClusterState, poolId: string, onNode?: string): string {
  const byName = new Map<string, string[]>();
  for (const n of state.networks.values()) {
    if (!n.poolIds.includes(poolId) || (onNode && n.node !== onNode)) continue;
    const name = n.name ?? n.networkId.slice(0, 12);
    byName.set(name, [...(byName.get(name) ?? []), n.node]);
  }
  if (byName.size === 0) return 'a network being created';
  return [...byName].map(([name, nodes]) => networkOn(name, nodes)).join(' and ');
}

/** `network "n1" (on h1, h2)` for a cluster network by name: the hosts that have it. */
export function clusterNetworkHolders(state: ClusterState, name: string): string {
  const nodes: string[] = [];
  for (const n of state.networks.values()) if (n.name === name) nodes.push(n.node);
  return networkOn(name, nodes);
}

function networkOn(name: string, nodes: string[]): string {
  const hosts = [...new Set(nodes)].sort();
  return `network "${name}" (${hosts.length ? `on ${hosts.join(', ')}` : 'on no host yet'})`;
}
