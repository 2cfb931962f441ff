/** Interest-based delivery: each event's chain and `prev`, and the fold of a reader that follows only some chains. */
import {
  CLUSTER_CHAIN,
  applyInterest,
  chainOf,
  decideBindEndpoint,
  decideNetworkNamed,
  decideNetworkRecorded,
  decideNodeHello,
  decideReleaseAddress,
  decideRequestAddress,
  decideRequestPool,
  describe as describeState,
  emptyState,
  fold,
  hostChain,
  poolChain,
  restore,
  snapshot,
  subjectToken,
  type ClusterEvent,
} from '@underlay/core';
import { RecentEvents } from '../../services/controller/src/recent-events';
import { engineWithLog } from './support';

const mac = (n: number) => ({ 'com.docker.network.endpoint.macaddress': `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` });

/** Hosts a, b and c; a and b share pool X (a's and b's network), c alone has pool Y. */
function cluster() {
  const { engine, log, run } = engineWithLog();
  for (const node of ['a', 'b', 'c']) run((s) => decideNodeHello(s, { node, address: `198.51.100.${node.charCodeAt(0)}` }), `node:${node}`);
  const x = run((s) => decideRequestPool(s, { node: 'a', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false })).poolId;
  run((s) => decideRequestPool(s, { node: 'b', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }), 'node:b');
  const y = run((s) => decideRequestPool(s, { node: 'c', space: 'underlay', pool: '2001:db8::/64', subPool: '', options: {}, v6: true }), 'node:c').poolId;
  for (const [node, poolId, net] of [['a', x, 'na'], ['b', x, 'nb'], ['c', y, 'nc']] as const) {
    run((s) => decideNetworkRecorded(s, { node, networkId: net, poolIds: [poolId], options: {} }), `node:${node}`);
    run((s) => decideNetworkNamed(s, { node, networkId: net, name: `net-${node}` }), `node:${node}`);
  }
  for (let i = 1; i <= 6; i++) {
    for (const [node, poolId, net] of [['a', x, 'na'], ['b', x, 'nb'], ['c', y, 'nc']] as const) {
      const r = run((s) => decideRequestAddress(s, { node, poolId, address: '', options: mac(i) }), `node:${node}`);
      const address = r.address.split('/')[0]!;
      run((s) => decideBindEndpoint(s, { node, poolId, address, allocSeq: r.allocSeq, endpointId: `ep-${node}-${i}`, networkId: net }), `node:${node}`);
      if (i % 3 === 0) run((s) => decideReleaseAddress(s, { node, poolId, address, allocSeq: r.allocSeq }), `node:${node}`);
    }
  }
  return { engine, log, x, y };
}

describe('event chains', () => {
  it('puts pool events on their pool, network records on their host, definitions on the cluster chain', () => {
    const { log, x, y } = cluster();
    for (const ev of log) {
      const expected =
        'poolId' in ev.data ? poolChain(ev.data.poolId) : ev.type === 'NodeRegistered' ? CLUSTER_CHAIN : hostChain({ na: 'a', nb: 'b', nc: 'c' }[(ev.data as { networkId: string }).networkId]!);
      expect(`${ev.type} ${ev.chain}`).toBe(`${ev.type} ${expected}`);
    }
    expect(log.filter((e) => e.chain === poolChain(x)).length).toBeGreaterThan(20);
    expect(log.filter((e) => e.chain === poolChain(y)).length).toBeGreaterThan(10);
    // A NetworkNamed without state cannot tell its host: the cluster chain.
    expect(chainOf({ type: 'NetworkNamed', data: { networkId: 'unknown', name: 'n' } })).toBe(CLUSTER_CHAIN);
  });

  it("stamps each event's prev with the seq of its chain's previous event (0 for the first)", () => {
    const { log, engine } = cluster();
    const last = new Map<string, number>();
    for (const ev of log) {
      expect(`${ev.seq} prev ${ev.prev}`).toBe(`${ev.seq} prev ${last.get(ev.chain!) ?? 0}`);
      last.set(ev.chain!, ev.seq);
    }
    expect([...engine.state.chains].sort()).toEqual([...last].sort());
  });

  it('a reader of some chains folds exactly their part of the state, and knows their heads', () => {
    const { log, engine, x, y } = cluster();
    const followed = new Set([CLUSTER_CHAIN, hostChain('a'), poolChain(x)]);
    const state = emptyState();
    for (const ev of log) if (followed.has(ev.chain!)) applyInterest(state, ev);
    const full = describeState(engine.state) as { pools: { poolId: string }[]; nodes: unknown[] };
    const part = describeState(state) as typeof full;
    expect(part.pools).toEqual(full.pools.filter((p) => p.poolId === x));
    expect(state.pools.has(y)).toBe(false);
    expect(part.nodes).toEqual(full.nodes);
    expect([...state.networks.keys()]).toEqual(['na']);
    for (const c of followed) expect(state.chains.get(c)).toBe(engine.state.chains.get(c));
    // The order within a chain is still checked.
    const again = log.filter((e) => e.chain === poolChain(x)).at(-1)!;
    expect(() => applyInterest(state, again)).toThrow(/out of order in its chain/);
  });

  it('keeps the chain heads through a snapshot; a snapshot from before chains bounds them by its seq', () => {
    const { engine, log } = cluster();
    const back = restore(JSON.parse(JSON.stringify(snapshot(engine.state))));
    expect([...back.chains]).toEqual([...engine.state.chains]);
    expect(back.chainFloor).toBe(0);
    const old = JSON.parse(JSON.stringify(snapshot(engine.state)));
    delete old.chains;
    delete old.chainFloor;
    const restored = restore(old);
    expect(restored.chains.size).toBe(0);
    expect(restored.chainFloor).toBe(engine.state.seq);
    // Events recorded before chains (no chain, no prev) fold to the same state and the same heads.
    const unstamped = log.map(({ chain: _c, prev: _p, ...ev }) => ev as ClusterEvent);
    const folded = fold(unstamped);
    expect(describeState(folded)).toEqual(describeState(engine.state));
    expect([...folded.chains].sort()).toEqual([...engine.state.chains].sort());
  });

  it('makes one subject token of any pool id or node name, one to one', () => {
    const ids = ['underlay/192.0.2.0/24', 'underlay/2001:db8::/64', 'my space/10.0.0.0/8', 'x~2e', 'x.', 'a*b>c', 'é☃'];
    const tokens = ids.map(subjectToken);
    for (const t of tokens) expect(t).toMatch(/^[A-Za-z0-9_\-/:~]+$/);
    expect(new Set(tokens).size).toBe(ids.length);
    expect(poolChain('underlay/192.0.2.0/24')).toBe('p.underlay/192~2e0~2e2~2e0/24');
  });
});

describe("the controller's last committed events (reads of one chain without etcd)", () => {
  it('answers a chain from the window, with how far it looked; nothing before the window', () => {
    const { log, x } = cluster();
    const recent = new RecentEvents(1_000);
    recent.add(log.slice(0, 10));
    recent.add(log.slice(10));
    const chain = poolChain(x);
    const all = recent.readChain(chain, 1, 10_000, 1 << 20)!;
    expect(all.events.map((e) => e.seq)).toEqual(log.filter((e) => e.chain === chain).map((e) => e.seq));
    expect(all.through).toBe(log.length);
    // Paged by limit: `through` stops before the first event left out.
    const page = recent.readChain(chain, 1, 3, 1 << 20)!;
    const fourth = log.filter((e) => e.chain === chain)[3]!.seq;
    expect(page.events).toHaveLength(3);
    expect(page.through).toBe(fourth - 1);
    // A batch that does not follow starts the window again: reads before it go to etcd.
    recent.add([{ ...log.at(-1)!, seq: log.length + 5 }]);
    expect(recent.readChain(chain, 1, 10, 1 << 20)).toBeUndefined();
    expect(recent.readChain(chain, log.length + 5, 10, 1 << 20)!.through).toBe(log.length + 5);
  });
});
