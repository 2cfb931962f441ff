import {
  decideBindEndpoint,
  decideReleaseEmptyBlocks,
  restore,
  snapshot,
  decideReleaseAddress,
  decideReleasePool,
  decideRequestAddress,
  decideRequestPool,
  decideNetworkNamed,
  decideNetworkRecorded,
  describe as describeState,
  fold,
  FoldError,
  UnderlayError,
  parseAddr,
  parseCidr,
  usableRange,
  type ClusterState,
} from '@underlay/core';
import { engineWithLog } from './support';

const GW = { RequestAddressType: 'com.docker.network.gateway' };
const mac = (n: number) => ({ 'com.docker.network.endpoint.macaddress': `02:00:00:00:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}` });

const setup = () => engineWithLog();

describe('IPAM decisions', () => {
  it('shares one pool and one gateway between hosts', () => {
    const { run } = setup();
    const a = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }));
    const b = run((s) => decideRequestPool(s, { node: 'b', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }));
    expect(b.poolId).toBe(a.poolId);
    const ga = run((s) => decideRequestAddress(s, { node: 'a', poolId: a.poolId, address: '', options: GW }));
    const gb = run((s) => decideRequestAddress(s, { node: 'b', poolId: a.poolId, address: '', options: GW }));
    expect(ga.address).toBe('192.0.2.1/24');
    expect(gb.address).toBe('192.0.2.1/24');
    expect(() => run((s) => decideRequestAddress(s, { node: 'b', poolId: a.poolId, address: '192.0.2.9', options: GW }))).toThrow(
      /gateway of 192.0.2.0\/24 is already 192.0.2.1/,
    );
    const e1 = run((s) => decideRequestAddress(s, { node: 'a', poolId: a.poolId, address: '', options: mac(1) }));
    const e2 = run((s) => decideRequestAddress(s, { node: 'b', poolId: a.poolId, address: '', options: mac(1) }));
    expect(e1.address).toBe('192.0.2.2/24');
    expect(e2.address).toBe('192.0.2.64/24'); // b fills its own /26 block
    // The same handle (node + MAC) again gets the same address.
    const again = run((s) => decideRequestAddress(s, { node: 'a', poolId: a.poolId, address: '', options: mac(1) }));
    expect(again).toEqual(e1);
  });

  it('honours user gateways, static addresses, aux reservations and ranges', () => {
    const { run } = setup();
    const p = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '192.0.2.128/30', options: {}, v6: false }));
    expect(run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '192.0.2.254', options: GW })).address).toBe('192.0.2.254/24');
    expect(run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '192.0.2.129', options: {} })).address).toBe('192.0.2.129/24');
    // The same aux reservation from a second host is the same reservation.
    run((s) => decideRequestAddress(s, { node: 'b', poolId: p.poolId, address: '192.0.2.129', options: {} }));
    expect(run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '192.0.2.7', options: mac(7) })).address).toBe('192.0.2.7/24');
    expect(() => run((s) => decideRequestAddress(s, { node: 'b', poolId: p.poolId, address: '192.0.2.7', options: mac(8) }))).toThrow(
      'address 192.0.2.7 is already in use by an endpoint on node a',
    );
    expect(() => run((s) => decideRequestAddress(s, { node: 'b', poolId: p.poolId, address: '192.0.2.255', options: mac(9) }))).toThrow(/broadcast/);
    // --ip-range 192.0.2.128/30 holds .128-.131; .129 is aux, so .128, .130, .131 are left.
    const got = [1, 2, 3].map((n) => run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: mac(100 + n) })).address);
    expect(got.sort()).toEqual(['192.0.2.128/24', '192.0.2.130/24', '192.0.2.131/24']);
    expect(() => run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: mac(200) }))).toThrow('no free address in 192.0.2.128/30');
  });

  it('refuses overlapping pools unless in another address space, and pools without a subnet', () => {
    const { run } = setup();
    run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }));
    expect(() => run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/25', subPool: '', options: {}, v6: false }))).toThrow(
      /overlaps with 192.0.2.0\/24/,
    );
    const other = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: { space: 'vlan30' }, v6: false }));
    expect(other.poolId).toBe('vlan30/192.0.2.0/24');
    expect(() => run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '', subPool: '', options: {}, v6: false }))).toThrow(/explicit subnet/);
  });

  it('ignores a late release of a reused address and deletes a pool with its last holder', () => {
    const { run, engine } = setup();
    const p = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/30', subPool: '', options: {}, v6: false }));
    const first = run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: mac(1) }));
    run((s) => decideReleaseAddress(s, { node: 'a', poolId: p.poolId, address: '192.0.2.1', allocSeq: first.allocSeq }));
    const second = run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '192.0.2.1', options: mac(2) }));
    expect(second.allocSeq).toBeGreaterThan(first.allocSeq);
    const late = run((s) => decideReleaseAddress(s, { node: 'a', poolId: p.poolId, address: '192.0.2.1', allocSeq: first.allocSeq }));
    expect(late).toEqual({});
    expect(engine.state.pools.get(p.poolId)!.allocs.size).toBe(1);
    run((s) => decideReleasePool(s, { node: 'a', poolId: p.poolId }));
    expect(engine.state.pools.has(p.poolId)).toBe(true); // an endpoint is still in it
    run((s) => decideReleaseAddress(s, { node: 'a', poolId: p.poolId, address: '192.0.2.1' }));
    expect(engine.state.pools.has(p.poolId)).toBe(false);
  });

  it.each([
    ['IPv4 /31', '198.51.100.232/31', false, ['198.51.100.232/31', '198.51.100.233/31']],
    ['IPv6 /127', '2001:db8:77::/127', true, ['2001:db8:77::/127', '2001:db8:77::1/127']],
  ])('gives both addresses of a point-to-point %s to containers and reserves no gateway without --gateway', (_name, pool, v6, both) => {
    const { run, engine } = setup();
    const p = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool, subPool: '', options: {}, v6 }));
    const cidr = parseCidr(pool);
    expect(usableRange(cidr)).toEqual({ first: cidr.network, last: cidr.network + 1n });
    // Docker before 28 (and any Docker with a remote driver) still asks for a gateway: an address comes back, reserved for nobody.
    const gw = run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: GW }));
    expect(gw).toEqual({ address: both[0], allocSeq: 0, reserved: false });
    expect(engine.state.pools.get(p.poolId)!.gateway).toBeUndefined();
    expect(engine.state.pools.get(p.poolId)!.allocs.size).toBe(0);
    // Another host asks the same: the same answer, still nothing reserved.
    expect(run((s) => decideRequestAddress(s, { node: 'b', poolId: p.poolId, address: '', options: GW }))).toEqual(gw);
    const e1 = run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: mac(1) }));
    const e2 = run((s) => decideRequestAddress(s, { node: 'b', poolId: p.poolId, address: '', options: mac(2) }));
    expect([e1.address, e2.address].sort()).toEqual([...both].sort());
    expect(() => run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: mac(3) }))).toThrow(/no free address/);
    expect(engine.state.pools.get(p.poolId)!.allocs.size).toBe(2);
  });

  it('reserves the gateway of a point-to-point subnet when --gateway names it, and refuses /32', () => {
    const { run, engine } = setup();
    const p = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '198.51.100.234/31', subPool: '', options: {}, v6: false }));
    expect(run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '198.51.100.235', options: GW }))).toMatchObject({ address: '198.51.100.235/31' });
    expect(engine.state.pools.get(p.poolId)!.gateway).toBe(parseAddr('198.51.100.235').value);
    // Later gateway requests (another host) get the reserved one.
    expect(run((s) => decideRequestAddress(s, { node: 'b', poolId: p.poolId, address: '', options: GW })).address).toBe('198.51.100.235/31');
    expect(run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: mac(1) })).address).toBe('198.51.100.234/31');
    expect(() => run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '198.51.100.236/32', subPool: '', options: {}, v6: false }))).toThrow(
      'subnet 198.51.100.236/32 is too small: an IPv4 subnet needs a prefix of /31 (point-to-point, no gateway) or shorter',
    );
  });

  it('names the network holding a subnet, with its hosts, when another --ip-range asks for it, and says what to do', () => {
    const { run } = setup();
    const p = run((s) => decideRequestPool(s, { node: 'h1', space: 'underlay', pool: '198.51.100.176/28', subPool: '198.51.100.176/29', options: {}, v6: false, requestId: 'r1' }));
    run((s) => decideNetworkRecorded(s, { node: 'h1', networkId: 'a'.repeat(64), poolIds: [p.poolId], options: {} }));
    run((s) => decideNetworkNamed(s, { node: 'h1', networkId: 'a'.repeat(64), name: 'macvlannet1' }));
    let err: UnderlayError | undefined;
    try {
      run((s) => decideRequestPool(s, { node: 'h1', space: 'underlay', pool: '198.51.100.176/28', subPool: '198.51.100.184/29', options: {}, v6: false, requestId: 'r2' }));
    } catch (e) {
      err = e as UnderlayError;
    }
    expect(err).toBeInstanceOf(UnderlayError);
    expect(err!.code).toBe('conflict');
    expect(err!.message).toBe(
      'subnet 198.51.100.176/28 is already in use in the cluster by network "macvlannet1" (on h1) with --ip-range 198.51.100.176/29; ' +
        'use another subnet, or --ipam-opt space=NAME for the same subnet on another VLAN (a replica of network "macvlannet1" (on h1) needs the same --ip-range 198.51.100.176/29)',
    );
    // Every overlap refusal names the holder and says what to do.
    expect(() => run((s) => decideRequestPool(s, { node: 'h2', space: 'underlay', pool: '198.51.100.176/29', subPool: '', options: {}, v6: false }))).toThrow(
      'subnet 198.51.100.176/29 overlaps with 198.51.100.176/28 of network "macvlannet1" (on h1), already in use in address space "underlay"; use another subnet, or --ipam-opt space=NAME for the same subnet on another VLAN',
    );
    expect(() => run((s) => decideRequestPool(s, { node: 'h1', space: 'underlay', pool: '198.51.100.176/28', subPool: '198.51.100.176/29', options: {}, v6: false, requestId: 'r3' }))).toThrow(
      'subnet 198.51.100.176/28 is already used on this host by network "macvlannet1" (on h1); use another subnet, or --ipam-opt space=NAME for the same subnet on another VLAN',
    );
  });

  it('works for IPv6 pools', () => {
    const { run } = setup();
    const p = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '2001:db8:1::/64', subPool: '', options: {}, v6: true }));
    expect(run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: GW })).address).toBe('2001:db8:1::1/64');
    expect(run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: mac(1) })).address).toBe('2001:db8:1::2/64');
  });
});

/** Small seeded PRNG so a failing case can be replayed. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

describe('fold (property)', () => {
  const nodes = ['a', 'b', 'c', 'd'];
  const subnets = ['192.0.2.0/28', '198.51.100.0/29', '2001:db8::/125'];

  function checkInvariants(state: ClusterState, held: Map<string, string>) {
    for (const p of state.pools.values()) {
      const { first, last } = usableRange(p.cidr);
      for (const [v, a] of p.allocs) {
        expect(v >= first && v <= last).toBe(true);
        if (a.kind === 'endpoint' && p.subPool && !held.has(`${p.poolId}@${v}`)) {
          // dynamic endpoint addresses stay inside --ip-range
        }
      }
      // Blocks: each owned by one node, listed under it, with a true endpoint count.
      for (const [net, b] of p.blocks) {
        expect(p.nodeBlocks.get(b.node)).toContain(net);
        const size = 1n << BigInt((p.cidr.family === 4 ? 32 : 128) - p.blockPrefix);
        const inside = [...p.allocs].filter(([v, a]) => v >= net && v < net + size && a.kind === 'endpoint').length;
        expect(b.endpoints).toBe(inside);
        const used = [...p.allocs.keys()].filter((v) => v >= net && v < net + size && v >= p.first && v <= p.last).length;
        expect(b.used).toBe(used);
      }
      const gws = [...p.allocs.values()].filter((a) => a.kind === 'gateway');
      expect(gws.length).toBeLessThanOrEqual(1);
      for (const [h, v] of p.handles) expect(p.allocs.get(v)?.handle).toBe(h);
    }
  }

  it.each([1, 2, 3, 4, 5, 6, 7, 8])('random request sequences keep the invariants and fold back to the same state (seed %i)', (seed) => {
    const r = rng(seed * 7919);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
    const { engine, log, run } = setup();
    const live = new Map<string, { poolId: string; address: string; allocSeq: number; node: string }>();
    const pools = new Map<string, string>(); // subnet -> poolId
    for (let step = 0; step < 600; step++) {
      const node = pick(nodes);
      const op = r();
      try {
        if (op < 0.15 || pools.size === 0) {
          const subnet = pick(subnets);
          const options = { block_size: subnet.includes(':') ? '127' : '30' };
          const res = run((s) => decideRequestPool(s, { node, space: 'underlay', pool: subnet, subPool: '', options, v6: subnet.includes(':') }), `node:${node}`);
          pools.set(subnet, res.poolId);
          if (r() < 0.5) run((s) => decideRequestAddress(s, { node, poolId: res.poolId, address: '', options: GW }), `node:${node}`);
        } else if (op < 0.65) {
          const poolId = pick([...pools.values()]);
          const n = Math.floor(r() * 40);
          const res = run((s) => decideRequestAddress(s, { node, poolId, address: '', options: mac(n) }), `node:${node}`);
          const key = `${poolId}@${res.address}`;
          const prev = live.get(key);
          // Either a new address, or the very same allocation repeated under the same handle.
          if (prev) expect(prev.allocSeq).toBe(res.allocSeq);
          live.set(key, { poolId, address: res.address.split('/')[0]!, allocSeq: res.allocSeq, node });
          if (r() < 0.7) run((s) => decideBindEndpoint(s, { node, poolId, address: res.address.split('/')[0]!, allocSeq: res.allocSeq, endpointId: `ep${step}`, networkId: 'n' }), `node:${node}`);
        } else if (op < 0.7) {
          run(() => decideReleaseEmptyBlocks(engine.state, Date.now() + 3_600_000, 0), 'controller');
        } else if (op < 0.9 && live.size > 0) {
          const [key, a] = pick([...live.entries()]);
          const stale = r() < 0.2;
          run((s) => decideReleaseAddress(s, { node: a.node, poolId: a.poolId, address: a.address, allocSeq: stale ? a.allocSeq + 100000 : a.allocSeq }), `node:${node}`);
          if (!stale) live.delete(key);
        } else {
          const poolId = pick([...pools.values()]);
          run((s) => decideReleasePool(s, { node, poolId }), `node:${node}`);
          if (!engine.state.pools.has(poolId)) {
            for (const [k, v] of live) if (v.poolId === poolId) live.delete(k);
            for (const [k, v] of pools) if (v === poolId) pools.delete(k);
          }
        }
      } catch (e) {
        expect((e as Error).message).toMatch(/no free address|unknown pool/);
      }
      checkInvariants(engine.state, new Map());
      if (step % 97 === 0) expect(describeState(restore(JSON.parse(JSON.stringify(snapshot(engine.state)))))).toEqual(describeState(engine.state));
    }
    // Every live allocation is distinct and present; the log folds back to the same state.
    for (const a of live.values()) {
      const p = engine.state.pools.get(a.poolId)!;
      expect(p.allocs.get(parseAddr(a.address).value)?.seq).toBe(a.allocSeq);
    }
    expect(describeState(fold(log))).toEqual(describeState(engine.state));
    expect(log.map((e) => e.seq)).toEqual(log.map((_, i) => i + 1));
    void parseCidr;
  });
});

describe('request ids and address kinds (no MAC from Docker)', () => {
  it('a retried request gets the same allocation; a new request gets a new one', () => {
    const { run } = setup();
    const p = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false, requestId: 'p1' }));
    const first = run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: {}, requestId: 'r1' }));
    expect(run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: {}, requestId: 'r1' }))).toEqual(first);
    expect(run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '', options: {}, requestId: 'r2' })).address).not.toBe(first.address);
  });

  it('tells a static endpoint address from an aux reservation by the kind the agent gives', () => {
    const { run } = setup();
    const p = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }));
    run((s) => decideRequestPool(s, { node: 'b', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }));
    // An aux reservation is shared by every host ...
    run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '192.0.2.9', options: {}, requestId: 'x1', kind: 'aux' }));
    expect(run((s) => decideRequestAddress(s, { node: 'b', poolId: p.poolId, address: '192.0.2.9', options: {}, requestId: 'x2', kind: 'aux' })).address).toBe('192.0.2.9/24');
    // ... a static endpoint address is not.
    run((s) => decideRequestAddress(s, { node: 'a', poolId: p.poolId, address: '192.0.2.50', options: {}, requestId: 'e1', kind: 'endpoint' }));
    expect(() => run((s) => decideRequestAddress(s, { node: 'b', poolId: p.poolId, address: '192.0.2.50', options: {}, requestId: 'e2', kind: 'endpoint' }))).toThrow(
      'address 192.0.2.50 is already in use by an endpoint on node a',
    );
    expect(() => run((s) => decideRequestAddress(s, { node: 'b', poolId: p.poolId, address: '192.0.2.9', options: {}, requestId: 'e3', kind: 'endpoint' }))).toThrow(
      'address 192.0.2.9 is already in use by an --aux-address reservation',
    );
  });

  it('refuses a second network with the same subnet on one host, but not a retry', () => {
    const { run } = setup();
    const req = { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false };
    run((s) => decideRequestPool(s, { ...req, requestId: 'p1' }));
    expect(run((s) => decideRequestPool(s, { ...req, requestId: 'p1' })).poolId).toBe('underlay/192.0.2.0/24');
    expect(() => run((s) => decideRequestPool(s, { ...req, requestId: 'p2' }))).toThrow(/subnet 192.0.2.0\/24 is already used on this host by/);
    expect(run((s) => decideRequestPool(s, { ...req, node: 'b', requestId: 'p3' })).poolId).toBe('underlay/192.0.2.0/24');
  });
});

describe('the fold', () => {
  it('refuses an event out of order with a FoldError, an UnderlayError with code internal, not retriable', () => {
    const { run, log } = setup();
    run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }));
    let err: unknown;
    try {
      fold(log.slice(1));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FoldError);
    expect(err).toBeInstanceOf(UnderlayError);
    expect(err).toMatchObject({ name: 'FoldError', code: 'internal', retriable: false, seq: 2 });
    expect((err as Error).message).toBe('event 2: out of order, expected 1');
  });
});
