/**
 * IPAM decisions: given the current state and a request, which events to append and what to answer.
 * Pure: the controller applies the returned events to its state (in order) before deciding the next
 * request, so decisions made back to back never hand out the same address.
 */
import type { EventBody } from '../events.js';
import { ConflictError, ExhaustedError, InvalidArgumentError, NotFoundError } from '../errors.js';
import { type Cidr, contains, formatCidr, formatValue, overlaps, parseCidr, tryParseAddr, usableRange } from '../ip.js';
import {
  GATEWAY_REQUEST_TYPE,
  MAC_OPTION,
  type ReleaseAddressReq,
  type ReleasePoolReq,
  type RequestAddressReq,
  type RequestPoolReq,
} from '../protocol/ipam.js';
import type { IpamState, Pool } from './state.js';

export interface Decision<R> {
  events: EventBody[];
  result: R;
}

/** `--ipam-opt space=NAME` places a pool in its own address space (the same subnet on two VLANs). */
export const SPACE_OPTION = 'space';

export const poolIdOf = (space: string, cidr: string): string => `${space}/${cidr}`;

export function decideRequestPool(state: IpamState, req: RequestPoolReq): Decision<{ poolId: string; pool: string }> {
  if (req.pool === '') {
    throw new InvalidArgumentError(
      `underlay allocates addresses across the whole cluster and needs an explicit subnet: add --subnet (for example --subnet 192.0.2.0/24)${req.v6 ? ' and an IPv6 --subnet' : ''}`,
    );
  }
  const cidr = parseCidr(req.pool, { strict: true });
  if ((cidr.family === 6) !== req.v6) {
    throw new InvalidArgumentError(`subnet ${req.pool} is not an IPv${req.v6 ? 6 : 4} subnet`);
  }
  if (cidr.family === 4 && cidr.prefix > 30) {
    throw new InvalidArgumentError(`subnet ${req.pool} is too small: an IPv4 subnet needs a prefix of /30 or shorter`);
  }
  let subPool: Cidr | undefined;
  if (req.subPool) {
    subPool = parseCidr(req.subPool, { strict: true });
    if (subPool.family !== cidr.family || subPool.prefix < cidr.prefix || !contains(cidr, { family: subPool.family, value: subPool.network })) {
      throw new InvalidArgumentError(`--ip-range ${req.subPool} is not inside --subnet ${req.pool}`);
    }
  }
  const space = req.options[SPACE_OPTION] || req.space;
  const cidrText = formatCidr(cidr);
  const subText = subPool ? formatCidr(subPool) : undefined;
  const poolId = poolIdOf(space, cidrText);
  const existing = state.pools.get(poolId);
  if (existing) {
    if (existing.subPoolText !== subText) {
      throw new ConflictError(
        `subnet ${cidrText} is already in use in the cluster with ${existing.subPoolText ? `--ip-range ${existing.subPoolText}` : 'no --ip-range'}; use the same definition on every host`,
      );
    }
    const events: EventBody[] = existing.refs.has(req.node) ? [] : [{ type: 'PoolRefAdded', data: { poolId, node: req.node } }];
    return { events, result: { poolId, pool: cidrText } };
  }
  for (const other of state.pools.values()) {
    if (other.space === space && overlaps(other.cidr, cidr)) {
      throw new ConflictError(
        `subnet ${cidrText} overlaps with ${other.cidrText}, already in use in address space "${space}"; use a different subnet, or --ipam-opt space=NAME to place it in another address space`,
      );
    }
  }
  const options = { ...req.options };
  return {
    events: [
      { type: 'PoolCreated', data: { poolId, space, cidr: cidrText, subPool: subText, v6: req.v6, options } },
      { type: 'PoolRefAdded', data: { poolId, node: req.node } },
    ],
    result: { poolId, pool: cidrText },
  };
}

export function decideReleasePool(state: IpamState, req: ReleasePoolReq): Decision<Record<string, never>> {
  const pool = state.pools.get(req.poolId);
  if (!pool || !pool.refs.has(req.node)) return { events: [], result: {} };
  const events: EventBody[] = [{ type: 'PoolRefRemoved', data: { poolId: req.poolId, node: req.node } }];
  const endpointsLeft = [...pool.allocs.values()].some((a) => a.kind === 'endpoint');
  if (pool.refs.size === 1 && !endpointsLeft) events.push({ type: 'PoolDeleted', data: { poolId: req.poolId } });
  return { events, result: {} };
}

const getPool = (state: IpamState, poolId: string): Pool => {
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
  return `an endpoint on node ${a.node}`;
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

export function decideRequestAddress(state: IpamState, req: RequestAddressReq): Decision<{ address: string; allocSeq: number }> {
  const p = getPool(state, req.poolId);
  const nextSeq = state.seq + 1;
  const isGateway = req.options['RequestAddressType'] === GATEWAY_REQUEST_TYPE;
  const mac = req.options[MAC_OPTION];
  const alloc = (v: bigint, kind: 'endpoint' | 'gateway' | 'aux', requested: boolean, handle?: string): Decision<{ address: string; allocSeq: number }> => ({
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
    for (let v = first; v <= last; v++) if (!p.allocs.has(v)) return alloc(v, 'gateway', false);
    throw new ExhaustedError(`no free address in ${p.cidrText} for the gateway`);
  }

  const handle = mac ? `${req.node}/${mac.toLowerCase()}` : undefined;
  if (handle) {
    const held = p.handles.get(handle);
    if (held !== undefined && (!req.address || requestedValue(p, req.address) === held)) return existing(held);
  }
  if (req.address) {
    const v = requestedValue(p, req.address);
    const a = p.allocs.get(v);
    // An --aux-address is requested with no options; the same reservation from another host is the same one.
    if (!mac && a?.kind === 'aux') return existing(v);
    if (a) throw new ConflictError(`address ${req.address} is already in use by ${holderText(p, v)}`);
    return alloc(v, mac ? 'endpoint' : 'aux', true, handle);
  }
  const size = p.last - p.first + 1n;
  let v = p.cursor < p.first || p.cursor > p.last ? p.first : p.cursor;
  for (let i = 0n; i < size; i++) {
    if (!p.allocs.has(v)) return alloc(v, 'endpoint', false, handle);
    v = v >= p.last ? p.first : v + 1n;
  }
  throw new ExhaustedError(`no free address in ${p.subPoolText ?? p.cidrText}`);
}

export function decideReleaseAddress(state: IpamState, req: ReleaseAddressReq): Decision<Record<string, never>> {
  const p = state.pools.get(req.poolId);
  const a = p ? tryParseAddr(req.address) : undefined;
  const cur = p && a ? p.allocs.get(a.value) : undefined;
  // Gateway and aux reservations are shared by every host and go with the pool.
  if (!p || !a || !cur || cur.kind !== 'endpoint') return { events: [], result: {} };
  if (req.allocSeq !== undefined && req.allocSeq !== cur.seq) return { events: [], result: {} };
  const events: EventBody[] = [
    { type: 'AddressReleased', data: { poolId: p.poolId, address: formatValue(p.cidr.family, a.value), node: req.node, allocSeq: cur.seq } },
  ];
  // A pool that no host holds any more goes with its last endpoint.
  const othersLeft = [...p.allocs].some(([v, x]) => x.kind === 'endpoint' && v !== a.value);
  if (p.refs.size === 0 && !othersLeft) events.push({ type: 'PoolDeleted', data: { poolId: p.poolId } });
  return { events, result: {} };
}
