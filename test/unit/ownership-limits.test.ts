/**
 * Issue 10 (2, 4): a node acts only on what it holds, pools and block sizes have limits, every schema that
 * crosses a boundary has maxima (libs/core/src/limits.ts), and numeric settings are bounded. Pure: no I/O.
 */
import {
  ApiErrorCode,
  BindEndpointReq,
  ClusterEvent,
  DockerNetworkInspect,
  ErrorBodySchema,
  EventsQuery,
  HANDLE_MAX,
  LIMITS,
  NetworkCreateRequest,
  NetworkDefinition,
  NetworkNameReq,
  NetworkRecordReq,
  NodeReport,
  PermissionDeniedError,
  ReadEventsRes,
  ReleaseAddressReq,
  RequestAddressReq,
  RequestPoolReq,
  UnderlayError,
  collectLeaks,
  decideBindEndpoint,
  decideClusterNetworkCreate,
  decideClusterNetworkRemove,
  decideNetworkDefine,
  decideNetworkNamed,
  decideNetworkRecorded,
  decideNetworkRemoved,
  decideReleaseAddress,
  decideReleasePool,
  decideRequestAddress,
  decideRequestPool,
  describe as describeState,
  findLeakCandidates,
  fold,
  parseAddr,
  parseNetworkOptions,
  plugin,
  toErrorBody,
  type NodeLiveness,
} from '@underlay/core';
import { ControllerConfig } from '@underlay/controller';
import { AgentConfig } from '@underlay/node-agent';
import type { z } from 'zod';
import { engineWithClock } from './support';

const GW = { RequestAddressType: 'com.docker.network.gateway' };
const DEF = { options: { parent: 'eth0' }, subnets: [{ subnet: '192.0.2.0/24' }] };

/** h1 holds pool 192.0.2.0/24 (with its gateway), an address, and a Docker network `n1` it defined for the cluster. */
function cluster() {
  const t = engineWithClock();
  const as = (node: string) => `node:${node}`;
  const pool = t.run((s) => decideRequestPool(s, { node: 'h1', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false, requestId: 'p1' }), as('h1'));
  const gw = t.run((s) => decideRequestAddress(s, { node: 'h1', poolId: pool.poolId, address: '', options: GW }), as('h1'));
  t.run((s) => decideNetworkRecorded(s, { node: 'h1', networkId: 'nid-h1', poolIds: [pool.poolId], options: { parent: 'eth0' } }), as('h1'));
  t.run((s) => decideNetworkDefine(s, { node: 'h1', networkId: 'nid-h1', name: 'n1', definition: DEF }), as('h1'));
  const held = t.run((s) => decideRequestAddress(s, { node: 'h1', poolId: pool.poolId, address: '', options: {}, requestId: 'r1', kind: 'endpoint' }), as('h1'));
  const address = held.address.split('/')[0]!;
  return { ...t, as, poolId: pool.poolId, gw, held, address };
}

/** Runs `f`, expecting a permission-denied refusal with `message`, and checks that the state did not move. */
function refusedUnchanged(c: ReturnType<typeof cluster>, f: () => unknown, message: string) {
  const before = describeState(c.engine.state);
  const logLength = c.log.length;
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(PermissionDeniedError);
  expect((err as UnderlayError).code).toBe('permission-denied');
  expect((err as UnderlayError).retriable).toBe(false);
  expect((err as Error).message).toBe(message);
  expect(describeState(c.engine.state)).toEqual(before);
  expect(c.log.length).toBe(logLength);
}

describe('ownership: a node acts only on what it holds', () => {
  it('refuses a forged release of another node\'s address (with or without its allocSeq), naming the holder', () => {
    const c = cluster();
    const msg = `address ${c.address} in pool ${c.poolId} is held by node h1, not evil`;
    refusedUnchanged(c, () => c.run((s) => decideReleaseAddress(s, { node: 'evil', poolId: c.poolId, address: c.address, allocSeq: c.held.allocSeq }), c.as('evil')), msg);
    refusedUnchanged(c, () => c.run((s) => decideReleaseAddress(s, { node: 'evil', poolId: c.poolId, address: c.address }), c.as('evil')), msg);
    // So the address is still h1's: h2 asking for it gets a conflict, never a duplicate.
    c.run((s) => decideRequestPool(s, { node: 'h2', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }), c.as('h2'));
    expect(() => c.run((s) => decideRequestAddress(s, { node: 'h2', poolId: c.poolId, address: c.address, options: {}, kind: 'endpoint' }), c.as('h2'))).toThrow(
      `address ${c.address} is already in use by an endpoint on node h1`,
    );
  });

  it('refuses a forged bind of another node\'s address', () => {
    const c = cluster();
    refusedUnchanged(
      c,
      () => c.run((s) => decideBindEndpoint(s, { node: 'evil', poolId: c.poolId, address: c.address, allocSeq: c.held.allocSeq, endpointId: 'e'.repeat(64), networkId: 'nid-evil' }), c.as('evil')),
      `address ${c.address} in pool ${c.poolId} is held by node h1, not evil`,
    );
    expect(c.engine.state.pools.get(c.poolId)!.allocs.get(parseAddr(c.address).value)?.endpointId).toBeUndefined();
    // The holder binds it.
    expect(c.run((s) => decideBindEndpoint(s, { node: 'h1', poolId: c.poolId, address: c.address, allocSeq: c.held.allocSeq, endpointId: 'ep1', networkId: 'nid-h1' }), c.as('h1'))).toEqual({ bound: true });
  });

  it('a claim binds a free address to the claiming node\'s endpoint, its own whatever the seq, and refuses any other holder\'s', () => {
    const c = cluster();
    const claim = (node: string, address: string, ep = 'e'.repeat(64)) =>
      c.run((s) => decideBindEndpoint(s, { node, poolId: c.poolId, address, endpointId: ep, networkId: `nid-${node}`, claim: true }), c.as(node));
    // Another node's address, the gateway: refused (conflict), nothing changes.
    for (const [address, holder] of [[c.address, 'an endpoint on node h1'], [c.gw.address.split('/')[0]!, 'the gateway']] as const) {
      const before = describeState(c.engine.state);
      expect(() => claim('evil', address)).toThrow(`address ${address} is already in use by ${holder}`);
      expect(describeState(c.engine.state)).toEqual(before);
    }
    expect(() => claim('h1', '198.51.100.7')).toThrow('address 198.51.100.7 is not in subnet 192.0.2.0/24');
    // Its own: bound, whatever seq it knew; no new allocation. Bound to another endpoint of its own: refused.
    expect(claim('h1', c.address, 'ep1')).toEqual({ bound: true, allocSeq: c.held.allocSeq });
    expect(claim('h1', c.address, 'ep1')).toEqual({ bound: true, allocSeq: c.held.allocSeq });
    expect(() => claim('h1', c.address, 'ep9')).toThrow(`address ${c.address} is already bound to another endpoint on node h1 (ep1)`);
    // A free one: allocated to the node and bound in one decision, at the seq it answers.
    const free = '192.0.2.77';
    const r = claim('h1', free, 'ep2');
    expect(r).toEqual({ bound: true, allocSeq: c.engine.state.seq - 1, claimed: true });
    expect(c.engine.state.pools.get(c.poolId)!.allocs.get(parseAddr(free).value)).toMatchObject({ seq: r.allocSeq, kind: 'endpoint', node: 'h1', endpointId: 'ep2', networkId: 'nid-h1' });
    expect(c.log.slice(-2).map((e) => e.type)).toEqual(['AddressAllocated', 'EndpointBound']);
    expect(describeState(fold(c.log))).toEqual(describeState(c.engine.state));
  });

  it('refuses record, name, define and removal of another node\'s Docker network; the owner and the operator still remove', () => {
    const c = cluster();
    const msg = 'network "n1" (nid-h1) is recorded by node h1, not evil';
    refusedUnchanged(c, () => c.run((s) => decideNetworkRemoved(s, { node: 'evil', networkId: 'nid-h1' }), c.as('evil')), msg);
    refusedUnchanged(c, () => c.run((s) => decideNetworkRemoved(s, { node: 'evil', networkId: 'nid-h1', cluster: false }), c.as('evil')), msg);
    refusedUnchanged(c, () => c.run((s) => decideNetworkRecorded(s, { node: 'evil', networkId: 'nid-h1', poolIds: [], options: {} }), c.as('evil')), msg);
    refusedUnchanged(c, () => c.run((s) => decideNetworkNamed(s, { node: 'evil', networkId: 'nid-h1', name: 'other' }), c.as('evil')), msg);
    refusedUnchanged(c, () => c.run((s) => decideNetworkDefine(s, { node: 'evil', networkId: 'nid-h1', name: 'n1', definition: DEF }), c.as('evil')), msg);
    expect(c.engine.state.clusterNetworks.has('n1')).toBe(true);
    // The operator's `underlay network rm` (HTTP API) is not a node's: unchanged.
    c.run((s) => decideClusterNetworkRemove(s, { name: 'n1' }), 'user:alice');
    expect(c.engine.state.clusterNetworks.has('n1')).toBe(false);
    // The node that recorded it removes its own Docker network; a repeat is a no-op.
    c.run((s) => decideNetworkRemoved(s, { node: 'h1', networkId: 'nid-h1' }), c.as('h1'));
    expect(c.engine.state.networks.has('nid-h1')).toBe(false);
    expect(c.run((s) => decideNetworkRemoved(s, { node: 'evil', networkId: 'nid-h1' }), c.as('evil'))).toEqual({});
  });

  it('a release of a pool the caller holds no reference to changes nothing (it only ever drops the caller\'s own)', () => {
    const c = cluster();
    const before = describeState(c.engine.state);
    expect(c.run((s) => decideReleasePool(s, { node: 'evil', poolId: c.poolId }), c.as('evil'))).toEqual({});
    expect(describeState(c.engine.state)).toEqual(before);
    expect([...c.engine.state.pools.get(c.poolId)!.refs]).toEqual(['h1']);
  });

  it('keeps the legitimate flows: own release, idempotent retries, late releases, shared gateway, collector', () => {
    const c = cluster();
    // Every host's Docker asks for the gateway (h1 reserved it) and releases it with its network: a no-op.
    c.run((s) => decideRequestPool(s, { node: 'h2', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }), c.as('h2'));
    expect(c.run((s) => decideRequestAddress(s, { node: 'h2', poolId: c.poolId, address: '', options: GW }), c.as('h2'))).toEqual(c.gw);
    const before = c.log.length;
    expect(c.run((s) => decideReleaseAddress(s, { node: 'h2', poolId: c.poolId, address: c.gw.address.split('/')[0]! }), c.as('h2'))).toEqual({});
    expect(c.log.length).toBe(before);
    // The holder releases its address; a retry after a lost reply finds it free: a no-op, not a refusal.
    c.run((s) => decideReleaseAddress(s, { node: 'h1', poolId: c.poolId, address: c.address, allocSeq: c.held.allocSeq }), c.as('h1'));
    expect(c.log.at(-1)).toMatchObject({ type: 'AddressReleased', actor: 'node:h1', data: { node: 'h1', address: c.address } });
    expect(c.run((s) => decideReleaseAddress(s, { node: 'h1', poolId: c.poolId, address: c.address, allocSeq: c.held.allocSeq }), c.as('h1'))).toEqual({});
    expect(c.run((s) => decideReleaseAddress(s, { node: 'h1', poolId: c.poolId, address: c.address }), c.as('h1'))).toEqual({});
    // The address goes to h2; h1's late release (its old allocSeq) is still a no-op, not a refusal.
    const h2 = c.run((s) => decideRequestAddress(s, { node: 'h2', poolId: c.poolId, address: c.address, options: {}, kind: 'endpoint' }), c.as('h2'));
    expect(c.run((s) => decideReleaseAddress(s, { node: 'h1', poolId: c.poolId, address: c.address, allocSeq: c.held.allocSeq }), c.as('h1'))).toEqual({});
    expect(c.engine.state.pools.get(c.poolId)!.allocs.get(parseAddr(c.address).value)?.seq).toBe(h2.allocSeq);
    // The collector (actor controller) reclaims anyone's leak: h2's address, never bound, after two passes.
    c.advance(2 * 60_000);
    const nodes = new Map<string, NodeLiveness>([['h2', { lastSeenMs: c.nowMs() }]]);
    const policy = { unboundGraceMs: 60_000, reportSlackMs: 5_000, nodeExpiredMs: 3_600_000 };
    const pass1 = collectLeaks(c.engine.state, new Map(), findLeakCandidates(c.engine.state, c.nowMs(), nodes, policy, c.nowMs()));
    const pass2 = c.run(() => {
      const r = collectLeaks(c.engine.state, pass1.remember, findLeakCandidates(c.engine.state, c.nowMs(), nodes, policy, c.nowMs()));
      return { events: r.events, result: r };
    }, 'controller');
    expect(pass2.reclaimed.map((x) => `${x.address} ${x.node}`)).toEqual([`${c.address} h2`]);
    expect(c.engine.state.pools.get(c.poolId)!.allocs.has(parseAddr(c.address).value)).toBe(false);
    expect(describeState(fold(c.log))).toEqual(describeState(c.engine.state));
  });
});

describe('pool and block limits', () => {
  const req = (pool: string, options: Record<string, string> = {}) => ({ node: 'h1', space: 'underlay', pool, subPool: '', options, v6: pool.includes(':') });

  it('refuses pools larger than the limit, with the limit and its flag; /8 and /48 pass', () => {
    const t = engineWithClock();
    expect(() => t.run((s) => decideRequestPool(s, req('0.0.0.0/1')))).toThrow('pool 0.0.0.0/1 is larger than the limit /8 (--max-pool-prefix-v4)');
    expect(() => t.run((s) => decideRequestPool(s, req('10.0.0.0/7')))).toThrow('pool 10.0.0.0/7 is larger than the limit /8 (--max-pool-prefix-v4)');
    expect(() => t.run((s) => decideRequestPool(s, req('2001:db8::/32')))).toThrow('pool 2001:db8::/32 is larger than the limit /48 (--max-pool-prefix-v6)');
    expect(t.engine.state.pools.size).toBe(0);
    expect(t.log).toEqual([]);
    expect(t.run((s) => decideRequestPool(s, req('10.0.0.0/8'))).pool).toBe('10.0.0.0/8');
    expect(t.run((s) => decideRequestPool(s, req('2001:db8::/48'))).pool).toBe('2001:db8::/48');
    // The controller's own limits.
    const strict = { maxPoolPrefixV4: 16, maxPoolPrefixV6: 64 };
    expect(() => t.run((s) => decideRequestPool(s, req('172.16.0.0/12'), strict))).toThrow('pool 172.16.0.0/12 is larger than the limit /16 (--max-pool-prefix-v4)');
    expect(t.run((s) => decideRequestPool(s, req('0.0.0.0/1', { space: 'wide' }), { maxPoolPrefixV4: 0, maxPoolPrefixV6: 0 })).pool).toBe('0.0.0.0/1');
    // `underlay network create` refuses it up front too.
    expect(() => t.run((s) => decideClusterNetworkCreate(s, { name: 'huge', definition: { subnets: [{ subnet: '0.0.0.0/1' }] } }), 'user:alice')).toThrow(
      'subnets: pool 0.0.0.0/1 is larger than the limit /8 (--max-pool-prefix-v4)',
    );
  });

  it('refuses a block_size out of range, with the range', () => {
    const t = engineWithClock();
    for (const [pool, size, range] of [
      ['192.0.2.0/24', '4', 'from 8 to 32 for IPv4'],
      ['192.0.2.0/24', '33', 'from 8 to 32 for IPv4'],
      ['2001:db8:1::/64', '40', 'from 48 to 128 for IPv6'],
      ['2001:db8:1::/64', '129', 'from 48 to 128 for IPv6'],
    ] as const) {
      expect(() => t.run((s) => decideRequestPool(s, req(pool, { block_size: size })))).toThrow(`--ipam-opt block_size=${size} is not valid: give a prefix length ${range}`);
    }
    expect(() => t.run((s) => decideClusterNetworkCreate(s, { name: 'x', definition: { ipamOptions: { block_size: '4' }, subnets: [{ subnet: '192.0.2.0/24' }] } }))).toThrow(
      'ipamOptions: --ipam-opt block_size=4 is not valid: give a prefix length from 8 to 32 for IPv4',
    );
    expect(t.log).toEqual([]);
    expect(t.run((s) => decideRequestPool(s, req('192.0.2.0/24', { block_size: '32' }))).pool).toBe('192.0.2.0/24');
    expect(t.run((s) => decideRequestPool(s, req('198.51.100.0/24', { block_size: '8' }))).pool).toBe('198.51.100.0/24');
    expect(t.engine.state.pools.get('underlay/198.51.100.0/24')!.blockPrefix).toBe(24); // a block larger than its pool is the pool
  });
});

/** A schema's bound: `at(n)` makes an input of size n; `max` is accepted, `max + 1` refused. */
interface Bound {
  what: string;
  schema: z.ZodType;
  max: number;
  at: (n: number) => unknown;
}

const s = (n: number, c = 'a') => c.repeat(n);
const map = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
const list = <T>(n: number, f: (i: number) => T) => Array.from({ length: n }, (_, i) => f(i));
const hello = { node: 'h1', endpoints: [] };
const ev = (body: object) => ({ seq: 1, id: 'id-1', time: '2026-01-01T00:00:00Z', actor: 'node:h1', ...body });

const BOUNDS: Bound[] = [
  // NATS requests (protocol/ipam.ts)
  { what: 'RequestPoolReq options entries', schema: RequestPoolReq, max: LIMITS.mapEntries, at: (n) => ({ node: 'h1', space: 'underlay', pool: '192.0.2.0/24', options: map(n) }) },
  { what: 'RequestPoolReq option value', schema: RequestPoolReq, max: LIMITS.optionValue, at: (n) => ({ node: 'h1', space: 'underlay', pool: '', options: { k: s(n) } }) },
  { what: 'RequestPoolReq space', schema: RequestPoolReq, max: LIMITS.name, at: (n) => ({ node: 'h1', space: s(n), pool: '' }) },
  { what: 'RequestAddressReq address', schema: RequestAddressReq, max: LIMITS.address, at: (n) => ({ node: 'h1', poolId: 'p', address: s(n) }) },
  { what: 'RequestAddressReq poolId', schema: RequestAddressReq, max: LIMITS.poolId, at: (n) => ({ node: 'h1', poolId: s(n) }) },
  { what: 'ReleaseAddressReq address', schema: ReleaseAddressReq, max: LIMITS.address, at: (n) => ({ node: 'h1', poolId: 'p', address: s(n) }) },
  { what: 'BindEndpointReq endpointId', schema: BindEndpointReq, max: LIMITS.dockerId, at: (n) => ({ node: 'h1', poolId: 'p', address: 'a', endpointId: s(n), networkId: 'n' }) },
  { what: 'NodeReport endpoints', schema: NodeReport, max: LIMITS.nodeEndpoints, at: (n) => ({ ...hello, endpoints: list(n, (i) => i.toString(16)) }) },
  { what: 'NodeReport endpoint id', schema: NodeReport, max: LIMITS.dockerId, at: (n) => ({ ...hello, endpoints: [s(n)] }) },
  { what: 'NodeReport interfaces', schema: NodeReport, max: LIMITS.nodeInterfaces, at: (n) => ({ ...hello, interfaces: list(n, (i) => `v${i}`) }) },
  { what: 'NodeReport interface name', schema: NodeReport, max: LIMITS.ifName, at: (n) => ({ ...hello, interfaces: [s(n)] }) },
  { what: 'NodeReport networkStates', schema: NodeReport, max: LIMITS.nodeNetworks, at: (n) => ({ ...hello, networkStates: list(n, (i) => ({ name: `n${i}`, state: 'ready' })) }) },
  { what: 'NodeReport endpoint address', schema: NodeReport, max: LIMITS.address, at: (n) => ({ ...hello, endpointStates: [{ endpointId: 'e', networkId: 'n', state: 'joined', address: s(n) }] }) },
  { what: 'NodeReport container id', schema: NodeReport, max: LIMITS.name, at: (n) => ({ ...hello, endpointStates: [{ endpointId: 'e', networkId: 'n', state: 'joined', containerId: s(n) }] }) },
  { what: 'NodeReport leaseMs', schema: NodeReport, max: LIMITS.timerMs, at: (n) => ({ ...hello, leaseMs: n }) },
  { what: 'NodeReport version', schema: NodeReport, max: LIMITS.version, at: (n) => ({ ...hello, version: s(n) }) },
  { what: 'NetworkRecordReq poolIds', schema: NetworkRecordReq, max: LIMITS.poolIds, at: (n) => ({ node: 'h1', networkId: 'n', poolIds: list(n, (i) => `p${i}`) }) },
  { what: 'NetworkNameReq name', schema: NetworkNameReq, max: LIMITS.name, at: (n) => ({ node: 'h1', networkId: 'n', name: s(n) }) },
  // Replies (protocol/rpc.ts)
  { what: 'ErrorBody message', schema: ErrorBodySchema, max: LIMITS.message, at: (n) => ({ code: 'permission-denied', message: s(n), retriable: false }) },
  { what: 'ReadEventsRes events', schema: ReadEventsRes, max: LIMITS.readEvents, at: (n) => ({ events: list(n, () => null) }) },
  // Events
  { what: 'AddressAllocated handle', schema: ClusterEvent, max: HANDLE_MAX, at: (n) => ev({ type: 'AddressAllocated', data: { poolId: 'p', address: '192.0.2.1', kind: 'endpoint', node: 'h1', handle: s(n) } }) },
  { what: 'NetworkRecorded options', schema: ClusterEvent, max: LIMITS.mapEntries, at: (n) => ev({ type: 'NetworkRecorded', data: { networkId: 'n', node: 'h1', poolIds: [], options: map(n) } }) },
  { what: 'NodeRegistered interfaces', schema: ClusterEvent, max: LIMITS.nodeInterfaces, at: (n) => ev({ type: 'NodeRegistered', data: { node: 'h1', interfaces: list(n, () => 'eth0') } }) },
  { what: 'event actor', schema: ClusterEvent, max: LIMITS.actor, at: (n) => ({ ...ev({ type: 'PoolDeleted', data: { poolId: 'p' } }), actor: s(n) }) },
  // Network definitions
  { what: 'NetworkDefinition subnets', schema: NetworkDefinition, max: LIMITS.subnets, at: (n) => ({ subnets: list(n, (i) => ({ subnet: `10.${i}.0.0/16` })) }) },
  { what: 'NetworkDefinition labels', schema: NetworkDefinition, max: LIMITS.mapEntries, at: (n) => ({ subnets: [{ subnet: '10.0.0.0/16' }], labels: map(n) }) },
  { what: 'NetworkDefinition aux addresses', schema: NetworkDefinition, max: LIMITS.auxAddresses, at: (n) => ({ subnets: [{ subnet: '10.0.0.0/16', auxAddresses: map(n) }] }) },
  { what: 'DockerNetworkInspect containers', schema: DockerNetworkInspect, max: LIMITS.nodeEndpoints, at: (n) => ({ Name: 'n', Id: 'i', Driver: 'underlay', Containers: Object.fromEntries(list(n, (i) => [`c${i}`, {}])) }) },
  // The plugin socket (Docker's requests)
  { what: 'CreateNetwork NetworkID', schema: plugin.CreateNetworkRequest, max: LIMITS.dockerId, at: (n) => ({ NetworkID: s(n) }) },
  { what: 'CreateNetwork Options', schema: plugin.CreateNetworkRequest, max: LIMITS.mapEntries, at: (n) => ({ NetworkID: 'n', Options: map(n) }) },
  { what: 'CreateNetwork IPv4Data', schema: plugin.CreateNetworkRequest, max: LIMITS.subnets, at: (n) => ({ NetworkID: 'n', IPv4Data: list(n, () => ({ Pool: '10.0.0.0/8' })) }) },
  { what: 'Join SandboxKey', schema: plugin.JoinRequest, max: LIMITS.path, at: (n) => ({ NetworkID: 'n', EndpointID: 'e', SandboxKey: s(n) }) },
  { what: 'RequestAddress Options', schema: plugin.RequestAddressRequest, max: LIMITS.mapEntries, at: (n) => ({ PoolID: 'p', Options: map(n) }) },
  { what: 'ReleasePool PoolID', schema: plugin.ReleasePoolRequest, max: LIMITS.poolId, at: (n) => ({ PoolID: s(n) }) },
  // The HTTP API
  { what: 'NetworkCreateRequest subnets', schema: NetworkCreateRequest, max: LIMITS.subnets, at: (n) => ({ name: 'x', subnets: list(n, (i) => ({ subnet: `10.${i}.0.0/16` })) }) },
  { what: 'NetworkCreateRequest options', schema: NetworkCreateRequest, max: LIMITS.mapEntries, at: (n) => ({ name: 'x', options: map(n), subnets: [{ subnet: '10.0.0.0/16' }] }) },
  { what: 'EventsQuery since digits', schema: EventsQuery, max: 15, at: (n) => ({ since: s(n, '1') }) },
];

describe('schema maxima (limits.ts)', () => {
  it.each(BOUNDS.map((b) => [b.what, b] as const))('%s: the maximum passes, one more is refused', (_what, b) => {
    const ok = b.schema.safeParse(b.at(b.max));
    expect(ok.error?.issues ?? []).toEqual([]);
    expect(b.schema.safeParse(b.at(b.max + 1)).success).toBe(false);
  });

  it('permission-denied is on the wire and in the HTTP API, listed once (errors.ts ERROR_CODES)', () => {
    expect(ErrorBodySchema.parse(toErrorBody(new PermissionDeniedError('no')))).toEqual({ code: 'permission-denied', message: 'no', retriable: false });
    expect(ApiErrorCode.options).toContain('permission-denied');
  });

  it('cuts a message too long for the wire rather than failing the reply', () => {
    const body = toErrorBody(new UnderlayError('conflict', s(100_000)));
    expect(body.message.length).toBeLessThanOrEqual(LIMITS.message);
    expect(body.message).toMatch(/… \(\d+ more characters\)$/);
    expect(ErrorBodySchema.safeParse(body).success).toBe(true);
  });

  it('cuts names Docker gives (it sets no maximum) and status texts instead of refusing a node\'s whole report', () => {
    const n = DockerNetworkInspect.parse({ Name: 'n', Id: 'i', Driver: 'underlay', Containers: { c: { Name: s(1000) } } });
    expect(n.Containers!.c!.Name!.length).toBeLessThanOrEqual(LIMITS.name);
    const r = NodeReport.parse({
      ...hello,
      endpointStates: [{ endpointId: 'e', networkId: 'n', state: 'error', container: s(1000), network: s(1000), error: s(100_000) }],
      networkStates: [{ name: s(1000), state: 'conflict', detail: s(100_000) }],
    });
    const e = r.endpointStates[0]!;
    expect([e.container!.length, e.network!.length, r.networkStates[0]!.name.length].every((l) => l > LIMITS.name - 30 && l <= LIMITS.name)).toBe(true);
    expect([e.error!.length, r.networkStates[0]!.detail!.length].every((l) => l > LIMITS.message - 40 && l <= LIMITS.message)).toBe(true);
    expect(e.error).toMatch(/… \(\d+ more characters\)$/);
    expect(NodeReport.parse({ ...hello, endpointStates: [{ endpointId: 'e', networkId: 'n', state: 'joined', container: s(LIMITS.name) }] }).endpointStates[0]!.container).toBe(s(LIMITS.name));
  });

  it('driver options: at most 64, values at most 4096 characters', () => {
    expect(() => parseNetworkOptions(map(LIMITS.mapEntries + 1))).toThrow('too many options (65): a network takes at most 64');
    expect(() => parseNetworkOptions({ parent: s(LIMITS.optionValue + 1) })).toThrow('option parent is longer than 4096 characters');
    expect(parseNetworkOptions({ 'com.docker.network.x': s(LIMITS.optionValue) }).type).toBe('macvlan');
  });
});

describe('numeric settings', () => {
  const controller = { etcd: ['http://127.0.0.1:2379'], nats: 'nats://127.0.0.1:4222' };
  const issue = (r: { success: boolean; error?: { issues: { message: string }[] } }) => r.error?.issues[0]?.message;

  it('controller: timers fit 2^31-1 ms, counts and pool limits are bounded, messages name the flag and the bound', () => {
    expect(ControllerConfig.safeParse({ ...controller, collectIntervalMs: LIMITS.timerMs }).success).toBe(true);
    expect(issue(ControllerConfig.safeParse({ ...controller, collectIntervalMs: LIMITS.timerMs + 1 }))).toBe(
      '--collect-interval-ms must be at most 2147483647 ms (about 24.8 days, the longest timer Node.js keeps)',
    );
    for (const key of ['unboundGraceMs', 'reportSlackMs', 'nodeExpiredMs', 'blockGraceMs', 'nodeLeaseMs']) {
      expect(ControllerConfig.safeParse({ ...controller, [key]: 2 ** 31 }).success).toBe(false);
    }
    expect(issue(ControllerConfig.safeParse({ ...controller, snapshotEvery: 10_000_001 }))).toBe('--snapshot-every must be 1 to 10000000 events');
    expect(issue(ControllerConfig.safeParse({ ...controller, maxPoolPrefixV4: 33 }))).toBe('--max-pool-prefix-v4 must be 0 to 32');
    expect(issue(ControllerConfig.safeParse({ ...controller, maxPoolPrefixV6: 129 }))).toBe('--max-pool-prefix-v6 must be 0 to 128');
    const c = ControllerConfig.parse({ ...controller, maxPoolPrefixV4: '12' });
    expect([c.maxPoolPrefixV4, c.maxPoolPrefixV6]).toEqual([12, 48]);
  });

  it('agent: timers fit 2^31-1 ms (the default lease is 3 report intervals), lists are bounded', () => {
    const agent = { node: 'h1', nats: 'nats://127.0.0.1:4222' };
    const maxReport = Math.floor(LIMITS.timerMs / 3);
    expect(AgentConfig.safeParse({ ...agent, reportIntervalMs: maxReport }).success).toBe(true);
    expect(issue(AgentConfig.safeParse({ ...agent, reportIntervalMs: maxReport + 1 }))).toBe(
      `--report-interval-ms must be at most ${maxReport} ms (the default lease, three intervals, must fit the longest timer Node.js keeps)`,
    );
    expect(issue(AgentConfig.safeParse({ ...agent, leaseMs: LIMITS.timerMs + 1 }))).toBe('--lease-ms must be at most 2147483647 ms (the longest timer Node.js keeps)');
    for (const key of ['reconcileIntervalMs', 'routeReconcileMs']) expect(AgentConfig.safeParse({ ...agent, [key]: 2 ** 31 }).success).toBe(false);
    expect(issue(AgentConfig.safeParse({ ...agent, parentMap: list(65, (i) => `e${i}=f${i}`).join(',') }))).toBe('--parent-map takes at most 64 entries');
    expect(AgentConfig.safeParse({ ...agent, parentMap: list(64, (i) => `e${i}=f${i}`).join(',') }).success).toBe(true);
    expect(issue(AgentConfig.safeParse({ ...agent, bgpPeers: list(65, (i) => `192.0.2.${i}:65000`) }))).toBe('--bgp-peers takes at most 64 peers');
  });
});
