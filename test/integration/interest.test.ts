/**
 * Interest-based delivery (issue 14): an agent receives only the events it needs. Real etcd, NATS and controller; two
 * agents' views (the agent's ClusterView, as the agent makes it): h1 has a network on pool X, h3 only a network on pool
 * Y. Allocations on X by h1 and h2 (before and after the views start) reach h1's view, live and through its catch-up;
 * h3's view receives none of them (neither from NATS nor in its reads from the controller), while it still gets the
 * cluster's definitions and its own pool's events. Fails before interest-based delivery (every view read every event).
 */
import { RpcClient, connectNats, type NatsConnection } from '@underlay/adapters';
import { CLUSTER_CHAIN, MAC_OPTION, describe as describeState, hostChain, nodeInboxPrefix, poolChain, type ClusterEvent, type ClusterState } from '@underlay/core';
import { ClusterView } from '../../services/node-agent/src/cluster-view';
import { waitFor as labWaitFor } from '../lab/wait';
import { startEnv, windowed, mac, type Env } from './support';

jest.setTimeout(120_000);
let env: Env;
beforeAll(async () => {
  env = await startEnv();
});
afterAll(async () => {
  await env?.close();
});

/** An agent's view with what it was handed: events folded, and events in its reads from the controller. */
async function agentView(node: string, pools: string[]) {
  const asked: { method: string; req: unknown }[] = [];
  const nc: NatsConnection = await connectNats(env.nats.url, `view-${node}`, { inboxPrefix: nodeInboxPrefix(node) });
  env.conns.push(nc);
  const rpc = new RpcClient(nc, node);
  const read: ClusterEvent[] = [];
  const call = rpc.call.bind(rpc);
  rpc.call = (async (method, req, schema, o) => {
    asked.push({ method, req });
    const res = await call(method, req, schema, o);
    if (method === 'readEvents') read.push(...((res as { events: ClusterEvent[] }).events ?? []));
    return res;
  }) as RpcClient['call'];
  // As the agent makes it: following the pools of its networks.
  const opts = { nc, rpc, pools: () => pools, logger: process.env.UNDERLAY_TEST_LOG ? (m: string) => process.stderr.write(`${node}: ${m}\n`) : undefined };
  const view = new ClusterView(opts);
  const handed: ClusterEvent[] = [];
  view.onChange((evs) => handed.push(...evs));
  await view.start();
  return { nc, view, handed, read, asked, pools };
}

/** The controller (started by the first test that needs it) and what hosts ask it, as their agents would. */
async function cluster() {
  const c = env.controllers[0] ?? (await env.controller());
  const as = (node: string) => ({ actor: `node:${node}` });
  const alloc = (node: string, poolId: string, i: number) => c.ipam.requestAddress({ node, poolId, address: '', options: { [MAC_OPTION]: mac(i) } }, as(node));
  const pool = async (node: string, subnet: string) => (await c.ipam.requestPool({ node, space: 'underlay', pool: subnet, subPool: '', options: {}, v6: false }, as(node))).poolId;
  return { c, as, alloc, pool };
}

const poolOf = (ev: ClusterEvent): string | undefined => (ev.data as { poolId?: string }).poolId;
const poolState = (s: ClusterState, poolId: string) => (describeState(s) as { pools: { poolId: string }[] }).pools.find((p) => p.poolId === poolId);

it("an agent uninvolved in a network receives none of that network's allocation events", async () => {
  const { c, as, alloc, pool } = await cluster();
  const x = await pool('h1', '10.70.0.0/16');
  const y = await pool('h3', '10.71.0.0/16');
  await c.networks.networkRecord({ node: 'h1', networkId: 'n1'.padEnd(64, '1'), poolIds: [x], options: {} }, as('h1'));
  await c.networks.networkRecord({ node: 'h3', networkId: 'n3'.padEnd(64, '3'), poolIds: [y], options: {} }, as('h3'));
  // History before the agents start: their catch-up reads it.
  await windowed(20, 8, (i) => alloc('h1', x, i));

  const involved = await agentView('h1', [x]);
  const uninvolved = await agentView('h3', [y]);
  try {
    await Promise.all([involved.view.ready(), uninvolved.view.ready()]);
    const msgsBefore = { involved: involved.nc.stats().inMsgs, uninvolved: uninvolved.nc.stats().inMsgs };

    // Live: another host joins pool X and allocates; h1 too; h3 on its own pool; a node registers (cluster-wide).
    await pool('h2', '10.70.0.0/16');
    await windowed(300, 32, (i) => alloc('h2', x, 1_000 + i));
    await windowed(10, 4, (i) => alloc('h1', x, 2_000 + i));
    await windowed(5, 5, (i) => alloc('h3', y, 3_000 + i));
    await c.registration.nodeReport({ node: 'h4', address: '203.0.113.4', version: '0.1.0', interfaces: ['eth0'], endpoints: [], endpointStates: [], networkStates: [] }, as('h4'));
    await c.writer.settled();

    const want = c.writer.state;
    await labWaitFor(() => JSON.stringify(poolState(involved.view.state, x)) === JSON.stringify(poolState(want, x)), { timeoutMs: 20_000, what: "h1's view to hold pool X as the controller does" });
    await labWaitFor(() => uninvolved.view.state.nodes.has('h4') && JSON.stringify(poolState(uninvolved.view.state, y)) === JSON.stringify(poolState(want, y)), {
      timeoutMs: 20_000,
      what: "h3's view to hold node h4 and pool Y as the controller does",
    });
    // Head checks come every 2 s: let a few pass, so that anything late would have arrived.
    await new Promise((r) => setTimeout(r, 2_500));

    const xEvents = [...want.pools.get(x)!.allocs.values()].length;
    expect(xEvents).toBe(330);
    // The uninvolved agent: nothing of pool X, handed or read.
    expect(uninvolved.handed.filter((e) => poolOf(e) === x)).toEqual([]);
    expect(uninvolved.read.filter((e) => poolOf(e) === x)).toEqual([]);
    expect(uninvolved.view.state.pools.has(x)).toBe(false);
    // ... and what it needs: the cluster chain, its host and its pool.
    expect(uninvolved.handed.some((e) => e.type === 'NodeRegistered' && e.data.node === 'h4')).toBe(true);
    expect(uninvolved.handed.filter((e) => poolOf(e) === y && e.type === 'AddressAllocated')).toHaveLength(5);
    // Pool X's 311 live events cost it no message: what it received meanwhile is head checks' answers.
    const received = { involved: involved.nc.stats().inMsgs - msgsBefore.involved, uninvolved: uninvolved.nc.stats().inMsgs - msgsBefore.uninvolved };
    expect(received.involved).toBeGreaterThanOrEqual(311);
    expect(received.uninvolved).toBeLessThan(40);
    // The involved agent: pool X whole (history and live, every host's allocations), nothing of pool Y.
    expect(poolState(involved.view.state, x)).toEqual(poolState(want, x));
    expect(involved.handed.filter((e) => e.type === 'AddressAllocated' && poolOf(e) === x)).toHaveLength(330);
    expect(involved.handed.filter((e) => poolOf(e) === y)).toEqual([]);
    process.stderr.write(`interest: messages received during 316 pool events and 1 cluster event: involved ${received.involved}, uninvolved ${received.uninvolved}\n`);
  } finally {
    await involved.view.stop();
    await uninvolved.view.stop();
  }
});

it('an agent that joins a network reads its pool from then on; an agent starting later catches up on its chains only', async () => {
  const { c, as, alloc, pool } = await cluster();
  const x = await pool('h5', '10.72.0.0/16');
  const y = await pool('h6', '10.73.0.0/16');
  await windowed(40, 8, (i) => alloc('h5', x, 4_000 + i));
  const agent = await agentView('h6', [y]);
  try {
    await agent.view.ready();
    expect(agent.view.state.pools.has(x)).toBe(false);
    // h6 joins pool X's network: the agent follows X from its start (the history before, then live).
    await pool('h6', '10.72.0.0/16');
    agent.pools.push(x);
    agent.view.refreshInterest();
    await windowed(10, 5, (i) => alloc('h6', x, 5_000 + i));
    await c.writer.settled();
    await labWaitFor(() => JSON.stringify(poolState(agent.view.state, x)) === JSON.stringify(poolState(c.writer.state, x)), { timeoutMs: 20_000, what: "h6's view to hold pool X after it joined" });
    expect(agent.handed.filter((e) => e.type === 'AddressAllocated' && poolOf(e) === x)).toHaveLength(50);
  } finally {
    await agent.view.stop();
  }
  // Another agent starting now, with pool Y's network only: its catch-up reads Y, its host and the cluster, nothing of X.
  await windowed(30, 8, (i) => alloc('h5', x, 6_000 + i));
  await windowed(3, 3, (i) => alloc('h6', y, 7_000 + i));
  await c.writer.settled();
  const again = await agentView('h7', [y]);
  try {
    await again.view.ready();
    await labWaitFor(() => JSON.stringify(poolState(again.view.state, y)) === JSON.stringify(poolState(c.writer.state, y)), { timeoutMs: 20_000, what: "h7's view to hold pool Y" });
    const reads = again.asked.filter((a) => a.method === 'readEvents').map((a) => (a.req as { chain?: string }).chain);
    expect(reads.length).toBeGreaterThan(0);
    expect(reads.every((chain) => chain !== undefined && !chain.includes('10~2e72'))).toBe(true);
    expect(again.read.filter((e) => poolOf(e) === x)).toEqual([]);
    expect(again.handed.filter((e) => poolOf(e) === x)).toEqual([]);
  } finally {
    await again.view.stop();
  }
});

it('an agent whose host leaves a pool (no network, nothing held there) stops receiving its events', async () => {
  const { c, as, alloc, pool } = await cluster();
  const z = await pool('h9', '10.74.0.0/16');
  await pool('h8', '10.74.0.0/16');
  const agent = await agentView('h8', [z]);
  try {
    await agent.view.ready();
    await windowed(5, 5, (i) => alloc('h9', z, 8_000 + i));
    await labWaitFor(() => agent.handed.filter((e) => e.type === 'AddressAllocated' && poolOf(e) === z).length === 5, { timeoutMs: 20_000, what: "h8's view to get h9's 5 allocations in pool Z" });
    // h8's network on Z goes: Docker releases the pool; the agent's networks no longer name it.
    await c.ipam.releasePool({ node: 'h8', poolId: z }, as('h8'));
    agent.pools.splice(0);
    agent.view.refreshInterest();
    await labWaitFor(() => !agent.view.followed.some((chain) => chain.includes('10~2e74')), { timeoutMs: 10_000, what: 'h8 to stop following pool Z' });
    const handed = agent.handed.length;
    const before = agent.nc.stats().inMsgs;
    await windowed(100, 20, (i) => alloc('h9', z, 9_000 + i));
    await c.writer.settled();
    await new Promise((r) => setTimeout(r, 2_500));
    expect(agent.handed.slice(handed).filter((e) => poolOf(e) === z)).toEqual([]);
    expect(agent.nc.stats().inMsgs - before).toBeLessThan(20);
  } finally {
    await agent.view.stop();
  }
});

it('an agent follows a pool where its host holds a block that no network of its own names (claimed by a request that did not come through its Docker)', async () => {
  const { c, alloc, pool } = await cluster();
  const agent = await agentView('h10', []);
  try {
    await agent.view.ready();
    // Requests made for h10 (with its identity) but not by its agent: the controller's head answers name the pool.
    const w = await pool('h10', '10.75.0.0/16');
    await windowed(3, 3, (i) => alloc('h10', w, 10_000 + i));
    await c.writer.settled();
    await labWaitFor(() => agent.view.followed.includes(poolChain(w)), { timeoutMs: 15_000, what: 'h10 to follow pool W, where its host holds a block' });
    await labWaitFor(() => JSON.stringify(poolState(agent.view.state, w)) === JSON.stringify(poolState(c.writer.state, w)), { timeoutMs: 15_000, what: "h10's view to hold pool W" });
    expect(agent.handed.filter((e) => e.type === 'BlockClaimed' && poolOf(e) === w)).toHaveLength(1);
  } finally {
    await agent.view.stop();
  }
});

it("a view has seen a removal once it read each chain the removal's answer names through its head, whatever seq it folded", async () => {
  const { c, as } = await cluster();
  const agent = await agentView('h11', []);
  try {
    await agent.view.ready();
    const id = 'b11'.padEnd(64, 'b');
    await c.networks.networkRecord({ node: 'h11', networkId: id, poolIds: [], options: {} }, as('h11'));
    const r = await c.networks.networkRemove({ node: 'h11', networkId: id }, as('h11'));
    // The answer names the chains the agent's replica reconcile reads: the cluster's and h11's own.
    expect(Object.keys(r.chains ?? {}).sort()).toEqual([CLUSTER_CHAIN, hostChain('h11')].sort());
    expect(r.chains![hostChain('h11')]).toBe(r.seq);
    await labWaitFor(() => agent.view.covers(r.seq!, r.chains!), { timeoutMs: 15_000, what: "h11's view to read the removal" });
    expect(agent.view.state.networks.has(id)).toBe(false);
    // A chain read only up to below its head is not covered, though the view folded a higher seq elsewhere.
    expect(agent.view.state.seq).toBeGreaterThanOrEqual(r.seq!);
    expect(agent.view.covers(r.seq!, { [hostChain('h11')]: r.seq! + 1 })).toBe(false);
    // A chain the view does not follow is not read here: nothing waits for it.
    expect(agent.view.covers(0, { [hostChain('nobody')]: r.seq! })).toBe(true);
  } finally {
    await agent.view.stop();
  }
});

it("a network's name answers the heads of the cluster chain and the host's: a view that read them holds the new cluster network with the name", async () => {
  const { c, as } = await cluster();
  const agent = await agentView('h14', []);
  try {
    await agent.view.ready();
    const id = 'c14'.padEnd(64, 'c');
    await c.networks.networkRecord({ node: 'h14', networkId: id, poolIds: [], options: {} }, as('h14'));
    const definition = { driver: 'underlay', ipv6: false, internal: false, options: { parent: 'eth1' }, labels: {}, ipamOptions: {}, subnets: [{ subnet: '10.114.0.0/24', auxAddresses: {} }] };
    const r = await c.networks.networkName({ node: 'h14', networkId: id, name: 'n14', definition, replica: false }, as('h14'));
    expect(r.member).toBe(true);
    // ClusterNetworkCreated on the cluster chain, NetworkNamed on h14's: two chains, two consumers.
    expect(r.chains[hostChain('h14')]).toBe(r.seq);
    expect(r.chains[CLUSTER_CHAIN]).toBe(r.seq - 1);
    await labWaitFor(() => agent.view.covers(r.seq, r.chains), { timeoutMs: 15_000, what: "h14's view to read the name" });
    expect(agent.view.state.networks.get(id)?.cluster).toBe(true);
    expect(agent.view.state.clusterNetworks.has('n14')).toBe(true);
  } finally {
    await agent.view.stop();
  }
});

it('an agent follows a pool where its host holds only an address borrowed from another host\'s block (no reference, no block)', async () => {
  const { c, as, alloc } = await cluster();
  // Two /29 blocks in a /28, both claimed by h13: h12's request borrows an address from one of them.
  const w = (await c.ipam.requestPool({ node: 'h13', space: 'underlay', pool: '10.76.0.0/28', subPool: '', options: { block_size: '29' }, v6: false }, as('h13'))).poolId;
  for (let i = 0; i < 8; i++) await alloc('h13', w, 20_000 + i);
  const agent = await agentView('h12', []);
  try {
    await agent.view.ready();
    const borrowed = await alloc('h12', w, 20_100);
    await c.writer.settled();
    const p = c.writer.state.pools.get(w)!;
    expect(p.nodeBlocks.has('h12') || p.refs.has('h12')).toBe(false);
    expect(borrowed.address.startsWith('10.76.0.')).toBe(true);
    await labWaitFor(() => agent.view.followed.includes(poolChain(w)), { timeoutMs: 15_000, what: 'h12 to follow pool W, where its host holds a borrowed address' });
    await labWaitFor(() => JSON.stringify(poolState(agent.view.state, w)) === JSON.stringify(poolState(c.writer.state, w)), { timeoutMs: 15_000, what: "h12's view to hold pool W" });
  } finally {
    await agent.view.stop();
  }
});
