/**
 * The RouteService recomputes only the destinations an event touches (`routeKeysOf` + `desiredRouteFor`).
 * Randomised check: after every batch of events, the incrementally kept table equals a full
 * `desiredRoutes` — over block claims and releases (/28, /30, /32 blocks), allocations of every kind
 * (borrowed ones too), releases, bindings, overlapping pools in two spaces, IPv6, and node address changes.
 */
import {
  apply,
  desiredRouteFor,
  desiredRoutes,
  emptyState,
  formatValue,
  parseCidr,
  routeKeysOf,
  type ClusterEvent,
  type DesiredRoute,
} from '@underlay/core';

const RUNS = 60;
const STEPS = 150;

describe('incremental route recomputation', () => {
  it(`equals a full recomputation after every batch (${RUNS} random runs of ${STEPS} events)`, () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    let batches = 0;
    let partial = 0;
    for (let run = 0; run < RUNS; run++) {
      const state = emptyState();
      let seq = 0;
      const mk = (type: string, data: Record<string, unknown>) => ({ seq: ++seq, id: String(seq), time: '2026-01-01T00:00:00Z', actor: 'x', type, data }) as unknown as ClusterEvent;
      const nodes = ['n1', 'n2', 'n3', 'n4'];
      const addrOf = () => pick([`198.51.100.${Math.floor(rnd() * 4 + 1)}`, '198.51.100.9,2001:db8::9', '2001:db8::7', undefined]);
      const pools = [
        { poolId: 'A', space: 's1', cidr: '192.0.2.0/26', v6: false, options: {}, blockPrefix: pick([28, 30, 32]), strictAffinity: false },
        { poolId: 'B', space: 's2', cidr: '192.0.2.0/26', v6: false, options: {}, blockPrefix: pick([28, 30]), strictAffinity: false },
        { poolId: 'C', space: 's1', cidr: '2001:db8:1::/120', v6: true, options: {}, blockPrefix: 124, strictAffinity: false },
      ];
      const nets = [
        { type: 'ipvlan' as const, ipvlanMode: 'l3', parent: 'eth1', poolIds: pick([['A', 'B'], ['B', 'A'], ['A']]) },
        { type: 'ipvlan' as const, ipvlanMode: 'l2', parent: 'eth3', poolIds: ['B'] },
        { type: 'ipvlan' as const, ipvlanMode: 'l3s', parent: 'eth2', poolIds: ['C', 'B'] },
      ] as unknown as Parameters<typeof desiredRoutes>[2];
      const me = 'n1';
      let table = new Map<string, DesiredRoute>();
      const full = () => {
        table = new Map();
        for (const r of desiredRoutes(state, me, nets)) if (!table.has(r.dst)) table.set(r.dst, r);
      };
      const check = (evs: ClusterEvent[]) => {
        batches++;
        let all = false;
        const keys = new Map<string, NonNullable<ReturnType<typeof routeKeysOf>>[number]>();
        for (const e of evs) {
          const k = routeKeysOf(state, e);
          if (k === undefined) {
            all = true;
            break;
          }
          for (const x of k) keys.set(x.dst, x);
        }
        if (all) full();
        else {
          partial++;
          for (const k of keys.values()) {
            const r = desiredRouteFor(state, me, nets, k);
            if (r) table.set(k.dst, r);
            else table.delete(k.dst);
          }
        }
        const want = new Map(desiredRoutes(state, me, nets).map((r) => [r.dst, r]));
        expect([...table.entries()].sort()).toEqual([...want.entries()].sort());
      };
      const applyAll = (evs: ClusterEvent[]) => {
        for (const e of evs) apply(state, e);
        check(evs);
      };
      applyAll(nodes.map((n) => mk('NodeRegistered', { node: n, address: addrOf() })));
      applyAll(pools.map((p) => mk('PoolCreated', p)));
      const pending: ClusterEvent[] = [];
      for (let step = 0; step < STEPS; step++) {
        const p = state.pools.get(pick(['A', 'B', 'C']))!;
        const c = parseCidr(pools.find((x) => x.poolId === p.poolId)!.cidr);
        const bits = c.family === 4 ? 32 : 128;
        const size = 1n << BigInt(bits - p.blockPrefix);
        const nblocks = Number(1n << BigInt(p.blockPrefix - c.prefix));
        const op = rnd();
        let ev: ClusterEvent | undefined;
        if (op < 0.25) {
          const b = c.network + BigInt(Math.floor(rnd() * nblocks)) * size;
          if (!p.blocks.has(b)) ev = mk('BlockClaimed', { poolId: p.poolId, block: `${formatValue(c.family, b)}/${p.blockPrefix}`, node: pick(nodes) });
        } else if (op < 0.35) {
          const bs = [...p.blocks.values()];
          if (bs.length) {
            const b = pick(bs);
            ev = mk('BlockReleased', { poolId: p.poolId, block: `${formatValue(c.family, b.network)}/${p.blockPrefix}`, node: b.node });
          }
        } else if (op < 0.7) {
          const total = 1 << (bits - c.prefix);
          const v = c.network + BigInt(1 + Math.floor(rnd() * (total - 2)));
          if (!p.allocs.has(v)) ev = mk('AddressAllocated', { poolId: p.poolId, address: formatValue(c.family, v), kind: pick(['endpoint', 'endpoint', 'endpoint', 'gateway', 'aux']), node: pick(nodes), requested: rnd() < 0.3 });
        } else if (op < 0.9) {
          const as = [...p.allocs.entries()];
          if (as.length) {
            const [v, a] = pick(as);
            ev = mk('AddressReleased', { poolId: p.poolId, address: formatValue(c.family, v), node: a.node, allocSeq: a.seq });
          }
        } else if (op < 0.95) {
          ev = mk('NodeRegistered', { node: pick(nodes), address: addrOf() });
        } else {
          const as = [...p.allocs.entries()];
          if (as.length) {
            const [v, a] = pick(as);
            ev = mk('EndpointBound', { poolId: p.poolId, address: formatValue(c.family, v), allocSeq: a.seq, endpointId: 'e', networkId: 'n', node: a.node });
          }
        }
        if (!ev) continue;
        pending.push(ev);
        apply(state, ev);
        if (pending.length >= 1 + Math.floor(rnd() * 3) || step === STEPS - 1) check(pending.splice(0));
      }
    }
    // Most batches took the incremental path (else this test would check little).
    expect(partial).toBeGreaterThan(batches / 2);
  });
});
