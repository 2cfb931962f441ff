/**
 * IPAM decisions: given the current state and a request, which events to append and what to answer.
 * Pure: the controller applies the returned events to its state (in order) before deciding the next
 * request, so decisions made back to back never hand out the same address.
 */
import type { AddressKind, EventBody } from '../state/events.js';
import { ConflictError, ExhaustedError, InvalidArgumentError, NotFoundError, PermissionDeniedError } from '../errors.js';
import { type Cidr, contains, formatCidr, formatValue, isPointToPoint, parseCidr, tryParseAddr, usableRange } from '../ip.js';
import { GATEWAY_REQUEST_TYPE, MAC_OPTION } from '../options.js';
import type { AddressRelease, AddressRequest, EndpointBinding, PoolRelease, PoolRequest } from './requests.js';
import { LIMITS } from '../limits.js';
import { blockOf, blockRange, blockSize, endpointCount, formatBlock, type Allocation, type ClusterState, type Pool } from '../state/cluster-state.js';
import { firstClaimedFrom, noteFullBefore, openFrom } from '../state/open-blocks.js';
import type { Decision } from '../state/decision.js';
import { DEFAULT_POOL_LIMITS, STRICT_AFFINITY_OPTION, booleanPoolOption, checkPoolOptions, SPACE_OPTION, blockPrefixOption, checkPoolSize, networksUsing, OVERLAP_HINT, overlappingPool, poolIdOf, type PoolLimits } from '../state/pool-rules.js';

export function decideRequestPool(state: ClusterState, req: PoolRequest, limits: PoolLimits = DEFAULT_POOL_LIMITS): Decision<{ poolId: string; pool: string }> {
  if (req.pool === '') {
    throw new InvalidArgumentError(
      `underlay allocates addresses across the whole cluster and needs an explicit subnet: add --subnet (for example --subnet 192.0.2.0/24)${req.v6 ? ' and an IPv6 --subnet' : ''}`,
    );
  }
  const cidr = parseCidr(req.pool, { strict: true });
  if ((cidr.family === 6) !== req.v6) {
    throw new InvalidArgumentError(`subnet ${req.pool} is not an IPv${req.v6 ? 6 : 4} subnet`);
  }
  if (cidr.family === 4 && cidr.prefix > 31) {
    throw new InvalidArgumentError(`subnet ${req.pool} is too small: an IPv4 subnet needs a prefix of /31 (point-to-point, no gateway) or shorter`);
  }
  let subPool: Cidr | undefined;
  if (req.subPool) {
    subPool = parseCidr(req.subPool, { strict: true });
    if (subPool.family !== cidr.family || subPool.prefix < cidr.prefix || !contains(cidr, { family: subPool.family, value: subPool.network })) {
      throw new InvalidArgumentError(`--ip-range ${req.subPool} is not inside --subnet ${req.pool}`);
    }
  }
  const space = req.options[SPACE_OPTION] || req.space;
  if (space.length > LIMITS.name) throw new InvalidArgumentError(`--ipam-opt ${SPACE_OPTION}=… is longer than ${LIMITS.name} characters`);
  const cidrText = formatCidr(cidr);
  const subText = subPool ? formatCidr(subPool) : undefined;
  const poolId = poolIdOf(space, cidrText);
  const existing = state.pools.get(poolId);
  if (existing) {
    if (existing.subPoolText !== subText) {
      const range = existing.subPoolText ? `--ip-range ${existing.subPoolText}` : 'no --ip-range';
      const holders = networksUsing(state, poolId);
      throw new ConflictError(
        `subnet ${cidrText} is already in use in the cluster by ${holders} with ${range}; ${OVERLAP_HINT} (a replica of ${holders} needs the same ${range})`,
      );
    }
    if (existing.refs.has(req.node)) {
      const prev = existing.refRequests.get(req.node);
      // A second Docker network with this subnet on one host (Docker's own IPAM refuses it too); a retry is fine.
      if (req.requestId && prev && prev !== req.requestId) {
        throw new ConflictError(
          `subnet ${cidrText} is already used on this host by ${networksUsing(state, poolId, req.node)}; ${OVERLAP_HINT}`,
        );
      }
      return { events: [], result: { poolId, pool: cidrText } };
    }
    return { events: [{ type: 'PoolRefAdded', data: { poolId, node: req.node, requestId: req.requestId } }], result: { poolId, pool: cidrText } };
  }
  // Limits apply to new pools: a host joining a pool that exists (a replica) is not refused for it.
  checkPoolSize(cidr, limits);
  const other = overlappingPool(state, space, cidr);
  if (other) {
    throw new ConflictError(
      `subnet ${cidrText} overlaps with ${other.cidrText} of ${networksUsing(state, other.poolId)}, already in use in address space "${space}"; ${OVERLAP_HINT}`,
    );
  }
  const options = { ...req.options };
  checkPoolOptions(options, cidr.family, limits);
  const blockPrefix = blockPrefixOption(options, cidr.family, limits);
  const strictAffinity = booleanPoolOption(options, STRICT_AFFINITY_OPTION);
  return {
    events: [
      { type: 'PoolCreated', data: { poolId, space, cidr: cidrText, subPool: subText, v6: req.v6, options, blockPrefix, strictAffinity } },
      { type: 'PoolRefAdded', data: { poolId, node: req.node, requestId: req.requestId } },
    ],
    result: { poolId, pool: cidrText },
  };
}

/**
 * A node gives up its own reference to a pool, never another's (the event names the caller). Without a
 * reference this is a no-op, not a refusal: it is also what a retry sees after a lost reply.
 */
export function decideReleasePool(state: ClusterState, req: PoolRelease): Decision<Record<string, never>> {
  const pool = state.pools.get(req.poolId);
  if (!pool || !pool.refs.has(req.node)) return { events: [], result: {} };
  const events: EventBody[] = [{ type: 'PoolRefRemoved', data: { poolId: req.poolId, node: req.node } }];
  if (pool.refs.size === 1 && endpointCount(pool) === 0) events.push({ type: 'PoolDeleted', data: { poolId: req.poolId } });
  return { events, result: {} };
}

const getPool = (state: ClusterState, poolId: string): Pool => {
  const p = state.pools.get(poolId);
  if (!p) throw new NotFoundError(`unknown pool ${poolId}: the network's pool is not known to the underlay controller`);
  return p;
};

const withPrefix = (p: Pool, v: bigint): string => `${formatValue(p.cidr.family, v)}/${p.cidr.prefix}`;

function holderText(p: Pool, v: bigint): string {
  const a = p.allocs.get(v);
  if (!a) return 'nobody';
  if (a.kind === 'gateway') return 'the gateway';
  if (a.kind === 'aux') return 'an --aux-address reservation';
  if (a.kind === 'host') return `the host address of node ${a.node}`;
  return `an endpoint on node ${a.node}`;
}

/** A node named an endpoint address another node holds. */
function notTheHolder(p: Pool, v: bigint, a: Allocation, caller: string): PermissionDeniedError {
  return new PermissionDeniedError(`address ${formatValue(p.cidr.family, v)} in pool ${p.poolId} is held by node ${a.node}, not ${caller}`);
}

/** Parses a requested address and checks that the pool may hold it. */
function requestedValue(p: Pool, text: string): bigint {
  const a = tryParseAddr(text);
  if (!a) throw new InvalidArgumentError(`invalid IP address ${JSON.stringify(text)}`);
  if (!contains(p.cidr, a)) throw new InvalidArgumentError(`address ${text} is not in subnet ${p.cidrText}`);
  const { first, last } = usableRange(p.cidr);
  if (a.value < first || a.value > last) {
    throw new InvalidArgumentError(`address ${text} is the network or broadcast address of ${p.cidrText} and cannot be used`);
  }
  return a.value;
}

export function decideRequestAddress(state: ClusterState, req: AddressRequest): Decision<{ address: string; allocSeq: number; reserved?: false }> {
  const p = getPool(state, req.poolId);
  const nextSeq = state.seq + 1;
  const isGateway = req.options['RequestAddressType'] === GATEWAY_REQUEST_TYPE;
  const mac = req.options[MAC_OPTION];
  const alloc = (v: bigint, kind: AddressKind, requested: boolean, handle?: string): Decision<{ address: string; allocSeq: number }> => ({
    events: [{ type: 'AddressAllocated', data: { poolId: p.poolId, address: formatValue(p.cidr.family, v), kind, node: req.node, handle, requested } }],
    result: { address: withPrefix(p, v), allocSeq: nextSeq },
  });
  const existing = (v: bigint) => ({ events: [], result: { address: withPrefix(p, v), allocSeq: p.allocs.get(v)!.seq } });

  if (isGateway) {
    if (p.gateway !== undefined) {
      if (req.address && requestedValue(p, req.address) !== p.gateway) {
        throw new ConflictError(
          `the gateway of ${p.cidrText} is already ${formatValue(p.cidr.family, p.gateway)} in the cluster; use --gateway ${formatValue(p.cidr.family, p.gateway)} or leave --gateway out`,
        );
      }
      return existing(p.gateway);
    }
    if (req.address) {
      const v = requestedValue(p, req.address);
      if (p.allocs.has(v)) throw new ConflictError(`gateway ${req.address} is already in use by ${holderText(p, v)}`);
      return alloc(v, 'gateway', true);
    }
    const { first, last } = usableRange(p.cidr);
    // A point-to-point subnet has no gateway unless --gateway names one (Docker 28's own drivers reserve none): Docker
    // before 28, and every Docker with a remote driver, still asks, and needs an address back. It gets the subnet's
    // first address, reserved for nobody, so both addresses stay for containers.
    if (isPointToPoint(p.cidr)) return { events: [], result: { address: withPrefix(p, first), allocSeq: 0, reserved: false } };
    for (let v = first; v <= last; v++) if (!p.allocs.has(v)) return alloc(v, 'gateway', false);
    throw new ExhaustedError(`no free address in ${p.cidrText} for the gateway`);
  }

  const handle = req.requestId ? `${req.node}/req/${req.requestId}` : mac ? `${req.node}/${mac.toLowerCase()}` : undefined;
  const kind = req.kind ?? (mac ? 'endpoint' : 'aux');
  if (handle) {
    const held = p.handles.get(handle);
    if (held !== undefined && (!req.address || requestedValue(p, req.address) === held)) return existing(held);
  }
  if (req.address) {
    const v = requestedValue(p, req.address);
    const a = p.allocs.get(v);
    // The same --aux-address reservation from another host is the same reservation.
    if (kind === 'aux' && a?.kind === 'aux') return existing(v);
    if (a) throw new ConflictError(`address ${req.address} is already in use by ${holderText(p, v)}`);
    return alloc(v, kind, true, kind === 'aux' ? undefined : handle);
  }
  const found = findInBlocks(p, req.node);
  if (!found) {
    throw new ExhaustedError(
      p.strictAffinity
        ? `no free address in ${p.subPoolText ?? p.cidrText} for node ${req.node}: its blocks are full and no block is left to claim (strict affinity)`
        : `no free address in ${p.subPoolText ?? p.cidrText}`,
    );
  }
  const d = alloc(found.value, kind === 'host' ? 'host' : 'endpoint', false, handle);
  if (found.claim) d.events.unshift({ type: 'BlockClaimed', data: { poolId: p.poolId, block: formatBlock(p, found.claim), node: req.node } });
  // A claim comes first, so the allocation's seq is one later.
  if (found.claim) d.result.allocSeq = nextSeq + 1;
  return d;
}

/** First free address in [first, last], starting at `from` and wrapping. */
function freeIn(p: Pool, first: bigint, last: bigint, from: bigint = first): bigint | undefined {
  const start = from < first || from > last ? first : from;
  for (let v = start; v <= last; v++) if (!p.allocs.has(v)) return v;
  for (let v = first; v < start; v++) if (!p.allocs.has(v)) return v;
  return undefined;
}

/** Pools with at most this many blocks are searched whole for an unclaimed block. */
const FULL_SEARCH_BLOCKS = 1n << 16n;

/**
 * Where a node's next address comes from: its own blocks first (in claim order), then a newly
 * claimed block, then (unless strict affinity) a free address borrowed from another node's block.
 */
function findInBlocks(p: Pool, node: string): { value: bigint; claim?: bigint } | undefined {
  const full = (b: { used: number }, r: { first: bigint; last: bigint }) => BigInt(b.used) > r.last - r.first;
  const own = p.nodeBlocks.get(node) ?? [];
  // Blocks before the hint are full (open-blocks.ts); the full ones found next to it move it on.
  let leadingFull = true;
  for (let i = firstClaimedFrom(p, own, openFrom(p, node)); i < own.length; i++) {
    const net = own[i]!;
    const b = p.blocks.get(net)!;
    const r = blockRange(p, net);
    if (!r || full(b, r)) {
      if (leadingFull) noteFullBefore(p, node, b.claimedSeq + 1);
      continue;
    }
    leadingFull = false;
    const v = freeIn(p, r.first, r.last, b.cursor);
    if (v !== undefined) return { value: v };
  }
  const step = blockSize(p);
  const firstBlock = blockOf(p, p.first);
  const total = (blockOf(p, p.last) - firstBlock) / step + 1n;
  const limit = total <= FULL_SEARCH_BLOCKS ? total : BigInt(p.blocks.size) + 1024n;
  let net = firstBlock;
  for (let i = 0n; i < limit && net <= p.last; i++, net += step) {
    if (p.blocks.has(net)) continue;
    const r = blockRange(p, net);
    const v = r && freeIn(p, r.first, r.last);
    if (v !== undefined) return { value: v, claim: net };
  }
  if (p.strictAffinity) return undefined;
  for (const [bnet, b] of p.blocks) {
    if (b.node === node) continue;
    const r = blockRange(p, bnet);
    if (!r || full(b, r)) continue;
    const v = freeIn(p, r.first, r.last, b.cursor);
    if (v !== undefined) return { value: v };
  }
  return undefined;
}

/**
 * A node releases an endpoint address it holds. Idempotent: an address already free, or given to another
 * allocation since (`allocSeq` differs: a late or repeated release), is a no-op. An address another node
 * holds is refused. Gateway and aux reservations are shared by every host and go with the pool (every
 * host's Docker releases them: a no-op). The collector reclaims leaks through collectLeaks, not here.
 */
export function decideReleaseAddress(state: ClusterState, req: AddressRelease): Decision<Record<string, never>> {
  const p = state.pools.get(req.poolId);
  const a = p ? tryParseAddr(req.address) : undefined;
  const cur = p && a ? p.allocs.get(a.value) : undefined;
  if (!p || !a || !cur || (cur.kind !== 'endpoint' && cur.kind !== 'host')) return { events: [], result: {} };
  if (req.allocSeq !== undefined && req.allocSeq !== cur.seq) return { events: [], result: {} };
  if (cur.node !== req.node) throw notTheHolder(p, a.value, cur, req.node);
  const events: EventBody[] = [
    { type: 'AddressReleased', data: { poolId: p.poolId, address: formatValue(p.cidr.family, a.value), node: cur.node, allocSeq: cur.seq } },
  ];
  if (poolGoesWith(p, 1)) events.push({ type: 'PoolDeleted', data: { poolId: p.poolId } });
  return { events, result: {} };
}

/** A pool that no host holds any more goes with its last endpoint: true when releasing `released` endpoints empties it. */
export function poolGoesWith(p: Pool, released: number): boolean {
  return p.refs.size === 0 && endpointCount(p) === released;
}

/** CreateEndpoint on a node: the address is now held by that endpoint. Only the node holding the address may bind it. */
export function decideBindEndpoint(state: ClusterState, req: EndpointBinding): Decision<{ bound: boolean; allocSeq?: number; claimed?: boolean }> {
  const p = state.pools.get(req.poolId);
  const a = p ? tryParseAddr(req.address) : undefined;
  const cur = p && a ? p.allocs.get(a.value) : undefined;
  if (req.claim && p && a) return claimForEndpoint(state, p, a.value, cur, req);
  if (!p || !a || !cur || cur.kind !== 'endpoint' || (req.allocSeq !== undefined && req.allocSeq !== cur.seq)) {
    return { events: [], result: { bound: false } };
  }
  if (cur.node !== req.node) throw notTheHolder(p, a.value, cur, req.node);
  if (cur.endpointId === req.endpointId) return { events: [], result: { bound: true } };
  return { events: [bound(p, a.value, cur.seq, req)], result: { bound: true } };
}

const bound = (p: Pool, v: bigint, allocSeq: number, req: EndpointBinding): EventBody => ({
  type: 'EndpointBound',
  data: { poolId: p.poolId, address: formatValue(p.cidr.family, v), allocSeq, endpointId: req.endpointId, networkId: req.networkId, node: req.node },
});

/**
 * A claim: the node's endpoint holds the address (its container runs with it). Free: allocated to the node (as a
 * requested address) and bound, in one decision, so nothing can take it in between. The node's own endpoint address,
 * unbound or bound to this endpoint: bound (whatever seq the node knew). Anything else (another node's, another
 * endpoint's, a reservation): refused.
 */
function claimForEndpoint(state: ClusterState, p: Pool, v: bigint, cur: Allocation | undefined, req: EndpointBinding): Decision<{ bound: boolean; allocSeq: number; claimed?: boolean }> {
  if (cur) {
    if (cur.kind !== 'endpoint' || cur.node !== req.node) {
      throw new ConflictError(`address ${formatValue(p.cidr.family, v)} is already in use by ${holderText(p, v)}`);
    }
    if (cur.endpointId === req.endpointId) return { events: [], result: { bound: true, allocSeq: cur.seq } };
    if (cur.endpointId !== undefined) {
      throw new ConflictError(`address ${formatValue(p.cidr.family, v)} is already bound to another endpoint on node ${cur.node} (${cur.endpointId.slice(0, 12)})`);
    }
    return { events: [bound(p, v, cur.seq, req)], result: { bound: true, allocSeq: cur.seq } };
  }
  requestedValue(p, req.address);
  const allocSeq = state.seq + 1;
  return {
    events: [
      { type: 'AddressAllocated', data: { poolId: p.poolId, address: formatValue(p.cidr.family, v), kind: 'endpoint', node: req.node, requested: true } },
      bound(p, v, allocSeq, req),
    ],
    result: { bound: true, allocSeq, claimed: true },
  };
}

/** Blocks that have held no endpoint for longer than the grace period go back to the pool. */
export function decideReleaseEmptyBlocks(state: ClusterState, nowMs: number, graceMs: number): Decision<{ released: string[] }> {
  const events: EventBody[] = [];
  const released: string[] = [];
  for (const p of state.pools.values()) {
    for (const b of p.blocks.values()) {
      if (b.endpoints !== 0 || b.emptySince === undefined) continue;
      if (nowMs - Date.parse(b.emptySince) < graceMs) continue;
      const block = formatBlock(p, b.network);
      events.push({ type: 'BlockReleased', data: { poolId: p.poolId, block, node: b.node } });
      released.push(`${p.poolId} ${block}`);
    }
  }
  return { events, result: { released } };
}
