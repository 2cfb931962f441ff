/**
 * The attack suite: a cluster as the README's "cluster by hand" runs it with authentication on (an operator,
 * account and users on a real nats-server, a controller on real etcd), and a host `evil` that holds valid
 * credentials of its own. One test per attack; each shows the attack fails AND that nothing changed (the honest
 * path still works and the state is as before), so none can pass by everything being broken.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Controller } from '@underlay/controller';
import { RpcClient, connectNats, type NatsConnection } from '@underlay/adapters';
import {
  BindEndpointRes,
  EVENTS_STREAM,
  EmptyRes,
  EventsHeadRes,
  NetworkRemoveRes,
  ReadEventsRes,
  RequestAddressRes,
  RequestPoolRes,
  RpcReply,
  eventSubject,
  CLUSTER_CHAIN,
  poolChain,
  nodeInboxPrefix,
  rpc,
  rpcServeSubject,
  rpcSubject,
  LIMITS,
  formatValue,
  type ClusterState,
  type RpcMethod,
} from '@underlay/core';
import { ClusterView } from '../../services/node-agent/src/cluster-view';
import { startEtcd, type EtcdService } from '../lab/services';
import { waitFor as labWaitFor } from '../lab/wait';
import { asyncErrors, closedWith, expectViolation, requestError, startAuthNats, violationOf, type AuthNats } from '../lab/nats-auth';

jest.setTimeout(120_000);

const POOL = '198.18.8.0/21'; // IPAM data only (RFC 2544 benchmarking range), never on a link
const GW = { RequestAddressType: 'com.docker.network.gateway' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();

let dir: string;
let etcd: EtcdService;
let auth: AuthNats;
let controller: Controller;
const conns: NatsConnection[] = [];
const views: ClusterView[] = [];

interface Host {
  name: string;
  nc: NatsConnection;
  rpc: RpcClient;
  /** Errors NATS reported on this connection (permission violations for publishes arrive here). */
  errors: Error[];
}

async function connectAs(node: string): Promise<Host> {
  const nc = await connectNats(auth.nats.url, `attack-${node}`, { creds: await auth.nodeCredsFile(node), inboxPrefix: nodeInboxPrefix(node) });
  conns.push(nc);
  return { name: node, nc, rpc: new RpcClient(nc, node), errors: asyncErrors(nc) };
}

/** The lab's waitFor, polling every 25 ms. */
const waitFor = (cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<unknown> => labWaitFor(cond, { timeoutMs, what, intervalMs: 25 });

/** The server refused `operation` on exactly `subject` for this connection (an async error after `before`). */
async function natsRefused(h: Host, before: number, operation: 'publish' | 'subscription', subject: string): Promise<void> {
  const mine = () => h.errors.slice(before).find((e) => {
    try {
      const v = violationOf(e);
      return v.operation === operation && v.subject === subject;
    } catch {
      return false;
    }
  });
  await waitFor(() => mine() !== undefined, 5_000, `NATS to refuse ${operation} of ${subject} for ${h.name}`);
}

let h1: Host;
let h2: Host;
let evil: Host;
let ops: NatsConnection; // the operator's (controller) credentials
let poolId: string;
let held: { address: string; allocSeq: number };

/** Every allocation of the pool, with its address as text. */
const allocationsIn = (state: ClusterState) => {
  const p = state.pools.get(poolId);
  return p ? [...p.allocs].map(([v, a]) => ({ ...a, address: formatValue(p.cidr.family, v) })) : [];
};
const allocations = () => allocationsIn(controller.writer.state);

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-attack-'));
  // A small max_payload makes "a reply larger than NATS allows" cheap to reach.
  [etcd, auth] = await Promise.all([startEtcd({ dir }), startAuthNats({ dir, extraConfig: '\nmax_payload: 131072\n' })]);
  controller = new Controller({ etcd: [etcd.url], nats: auth.nats.url, natsCreds: await auth.controllerCredsFile('c1'), listen: '127.0.0.1:0', name: 'c1' });
  await controller.start();
  await controller.whenLeader();
  ops = await connectNats(auth.nats.url, 'attack-operator', { creds: await auth.controllerCredsFile('operator') });
  conns.push(ops);
  [h1, h2, evil] = await Promise.all([connectAs('h1'), connectAs('h2'), connectAs('evil')]);
  const pool = await h1.rpc.call('requestPool', { node: 'h1', space: 'underlay', pool: POOL, subPool: '', options: {}, v6: false, requestId: 'p-h1' }, RequestPoolRes);
  poolId = pool.poolId;
  await h1.rpc.call('requestAddress', { node: 'h1', poolId, address: '', options: GW }, RequestAddressRes);
  await h2.rpc.call('requestPool', { node: 'h2', space: 'underlay', pool: POOL, subPool: '', options: {}, v6: false, requestId: 'p-h2' }, RequestPoolRes);
  await evil.rpc.call('requestPool', { node: 'evil', space: 'underlay', pool: POOL, subPool: '', options: {}, v6: false, requestId: 'p-evil' }, RequestPoolRes);
  const a = await h1.rpc.call('requestAddress', { node: 'h1', poolId, address: '', options: {}, requestId: 'a-h1', kind: 'endpoint' }, RequestAddressRes);
  held = { address: a.address.split('/')[0]!, allocSeq: a.allocSeq };
  await h1.rpc.call('bindEndpoint', { node: 'h1', poolId, address: held.address, allocSeq: held.allocSeq, endpointId: 'e'.repeat(64), networkId: 'n'.repeat(64) }, BindEndpointRes);
  await h1.rpc.call('networkRecord', { node: 'h1', networkId: 'n'.repeat(64), poolIds: [poolId], options: {} }, EmptyRes);
});

afterAll(async () => {
  for (const v of views) await v.stop().catch(() => {});
  await controller?.stop().catch(() => {});
  for (const nc of conns) await nc.close().catch(() => {});
  await Promise.all([etcd?.stop(), auth?.stop()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** h1's address is still h1's: nobody released or rebound it, and nobody else can have it. */
async function h1StillHolds(): Promise<void> {
  const a = allocations().find((x) => x.address === held.address);
  expect(a).toMatchObject({ node: 'h1', seq: held.allocSeq, endpointId: 'e'.repeat(64) });
  await expect(h2.rpc.call('requestAddress', { node: 'h2', poolId, address: held.address, options: {}, requestId: `again-${Date.now()}`, kind: 'endpoint' }, RequestAddressRes)).rejects.toThrow(/held|in use|allocated/i);
}

describe('attacks on the control plane (real nats-server with accounts, real etcd)', () => {
  it('an anonymous connection is refused', async () => {
    await expect(connectNats(auth.nats.url, 'anonymous')).rejects.toThrow(/authoriz/i);
    // The same server takes a node with credentials.
    expect((await h1.rpc.call('eventsHead', {}, EventsHeadRes)).seq).toBeGreaterThan(0);
  });

  it("a node's credentials cannot serve the controllers' subjects: requests still reach the controller", async () => {
    let hijacked = 0;
    // The callback also hears the subscription's own error (err set, no message): count only messages.
    const queued = evil.nc.subscribe(rpcServeSubject('requestAddress'), { queue: 'controllers', callback: (err) => void (err || hijacked++) });
    const plain = evil.nc.subscribe(rpcServeSubject('releaseAddress'), { callback: (err) => void (err || hijacked++) });
    expectViolation(await closedWith(queued), 'subscription', rpcServeSubject('requestAddress'));
    expectViolation(await closedWith(plain), 'subscription', rpcServeSubject('releaseAddress'));
    for (let i = 0; i < 10; i++) {
      const r = await h2.rpc.call('requestAddress', { node: 'h2', poolId, address: '', options: {}, requestId: `serve-${i}`, kind: 'endpoint' }, RequestAddressRes);
      expect(allocations().find((a) => a.seq === r.allocSeq)?.node).toBe('h2');
    }
    expect(hijacked).toBe(0);
  });

  it('a node cannot publish events, and a forged event never reaches a view', async () => {
    const jsm = await jetstreamManager(ops);
    const view = new ClusterView({ nc: h2.nc, rpc: h2.rpc });
    views.push(view);
    await view.start();
    await view.ready();
    const streamBefore = (await jsm.streams.info(EVENTS_STREAM)).state;
    const seq = controller.writer.state.seq + 1;
    const forged = { seq, id: '00000000-0000-4000-8000-000000000000', time: new Date().toISOString(), actor: 'node:h1', type: 'AddressReleased', data: { poolId, address: held.address, node: 'h1', allocSeq: held.allocSeq } };
    const h = natsHeaders();
    h.set('Underlay-Seq', String(seq));
    h.set('Nats-Msg-Id', String(seq));
    const before = evil.errors.length;
    evil.nc.publish(eventSubject(poolChain(poolId), 'AddressReleased'), enc.encode(JSON.stringify(forged)), { headers: h });
    await natsRefused(evil, before, 'publish', eventSubject(poolChain(poolId), 'AddressReleased'));
    await sleep(300);
    expect((await jsm.streams.info(EVENTS_STREAM)).state.messages).toBe(streamBefore.messages);
    // The next real event takes that seq; the view has the real one, never the forgery.
    const r = await h2.rpc.call('requestAddress', { node: 'h2', poolId, address: '', options: {}, requestId: 'after-forgery', kind: 'endpoint' }, RequestAddressRes);
    await waitFor(() => view.seq >= r.allocSeq, 10_000, 'the view to reach the next real event');
    expect(allocationsIn(view.state).find((a) => a.address === held.address)?.node).toBe('h1');
    await h1StillHolds();
  });

  it('a node cannot delete, purge or edit the stream, nor read it directly', async () => {
    const jsm = await jetstreamManager(ops);
    const info = await jsm.streams.info(EVENTS_STREAM);
    for (const subject of [
      `$JS.API.STREAM.DELETE.${EVENTS_STREAM}`,
      `$JS.API.STREAM.PURGE.${EVENTS_STREAM}`,
      `$JS.API.STREAM.UPDATE.${EVENTS_STREAM}`,
      `$JS.API.STREAM.MSG.GET.${EVENTS_STREAM}`,
      `$JS.API.STREAM.MSG.DELETE.${EVENTS_STREAM}`,
      `$JS.API.CONSUMER.CREATE.${EVENTS_STREAM}`,
      `$JS.API.CONSUMER.MSG.NEXT.${EVENTS_STREAM}.agent-h1`,
    ]) {
      expectViolation(await requestError(evil.nc, subject, JSON.stringify({ seq: 1, config: { name: EVENTS_STREAM, subjects: ['x'] } })), 'publish', subject);
    }
    const after = await jsm.streams.info(EVENTS_STREAM);
    expect(after.config.subjects).toEqual(info.config.subjects);
    expect(after.state.first_seq).toBe(info.state.first_seq);
    expect(after.state.messages).toBeGreaterThanOrEqual(info.state.messages);
  });

  it("a node cannot read another node's replies", async () => {
    let seen = 0;
    const other = evil.nc.subscribe(`${nodeInboxPrefix('h1')}.>`, { callback: (err) => void (err || seen++) });
    const all = evil.nc.subscribe('_INBOX.>', { callback: (err) => void (err || seen++) });
    expectViolation(await closedWith(other), 'subscription', `${nodeInboxPrefix('h1')}.>`);
    expectViolation(await closedWith(all), 'subscription', '_INBOX.>');
    const r = await h1.rpc.call('eventsHead', {}, EventsHeadRes);
    expect(r.seq).toBeGreaterThan(0);
    await sleep(200);
    expect(seen).toBe(0);
  });

  it("a node cannot send on another node's subjects", async () => {
    const asH1 = new RpcClient(evil.nc, 'h1');
    await expect(asH1.call('releaseAddress', { node: 'h1', poolId, address: held.address, allocSeq: held.allocSeq }, EmptyRes, { deadlineMs: 3_000, timeoutMs: 1_000 })).rejects.toMatchObject({ code: 'permission-denied', message: expect.stringMatching(/NATS refused/) });
    await h1StillHolds();
  });

  it('a forged release is refused, naming the owner, and the address stays held', async () => {
    // Body naming h1 on evil's own subject.
    await expect(evil.rpc.call('releaseAddress', { node: 'h1', poolId, address: held.address, allocSeq: held.allocSeq }, EmptyRes)).rejects.toMatchObject({ code: 'permission-denied' });
    // Evil's own name, h1's address.
    await expect(evil.rpc.call('releaseAddress', { node: 'evil', poolId, address: held.address, allocSeq: held.allocSeq }, EmptyRes)).rejects.toMatchObject({
      code: 'permission-denied',
      message: expect.stringMatching(/h1/),
    });
    await expect(evil.rpc.call('releaseAddress', { node: 'evil', poolId, address: held.address }, EmptyRes)).rejects.toMatchObject({ code: 'permission-denied' });
    await h1StillHolds();
  });

  it('a forged bind is refused and the address stays bound to its endpoint', async () => {
    await expect(
      evil.rpc.call('bindEndpoint', { node: 'evil', poolId, address: held.address, allocSeq: held.allocSeq, endpointId: 'f'.repeat(64), networkId: 'n'.repeat(64) }, BindEndpointRes),
    ).rejects.toMatchObject({ code: 'permission-denied', message: expect.stringMatching(/h1/) });
    // A claim (what an agent sends for its running container's released address) of h1's address: refused too.
    await expect(
      evil.rpc.call('bindEndpoint', { node: 'evil', poolId, address: held.address, claim: true, endpointId: 'f'.repeat(64), networkId: 'n'.repeat(64) }, BindEndpointRes),
    ).rejects.toMatchObject({ code: 'conflict', message: `address ${held.address} is already in use by an endpoint on node h1` });
    await h1StillHolds();
  });

  it("a forged report for another node is refused and the node's report is unchanged", async () => {
    await h1.rpc.call('nodeReport', { node: 'h1', address: '203.0.113.1', version: '0.1.0', interfaces: ['eth0'], endpoints: ['e'.repeat(64)] }, EmptyRes);
    await expect(evil.rpc.call('nodeReport', { node: 'h1', address: '203.0.113.66', version: '0.1.0', interfaces: ['eth0'], endpoints: [] }, EmptyRes)).rejects.toMatchObject({
      code: 'permission-denied',
    });
    await sleep(200);
    const seen = controller.nodes.get('h1')?.report;
    expect(seen?.endpoints).toEqual(['e'.repeat(64)]);
    expect(seen?.address).toBe('203.0.113.1');
    await h1StillHolds();
  });

  it("a forged removal of another node's network is refused", async () => {
    await expect(evil.rpc.call('networkRemove', { node: 'evil', networkId: 'n'.repeat(64), cluster: false }, NetworkRemoveRes)).rejects.toMatchObject({
      code: 'permission-denied',
      message: expect.stringMatching(/h1/),
    });
    expect([...controller.writer.state.networks.values()].some((n) => n.networkId === 'n'.repeat(64) && n.node === 'h1')).toBe(true);
  });

  it('a 0.0.0.0/1 pool is refused with the limit', async () => {
    await expect(evil.rpc.call('requestPool', { node: 'evil', space: 'underlay', pool: '0.0.0.0/1', subPool: '', options: {}, v6: false }, RequestPoolRes)).rejects.toMatchObject({
      code: 'invalid-argument',
      message: expect.stringMatching(/\/8/),
    });
    expect([...controller.writer.state.pools.values()].some((p) => p.cidrText === '0.0.0.0/1')).toBe(false);
  });

  it('the largest allowed request of every method, and a reply larger than NATS allows, leave the controller up', async () => {
    // Enough events that a page of 10,000 would not fit the server's 128 KiB max_payload.
    await Promise.all(Array.from({ length: 600 }, (_, i) => h2.rpc.call('requestAddress', { node: 'h2', poolId: poolId, address: '', options: {}, requestId: `bulk-${i}`, kind: 'endpoint' }, RequestAddressRes).catch(() => undefined)));
    const page = await h2.rpc.call('readEvents', { fromSeq: 1, limit: 10_000 }, ReadEventsRes);
    expect(page.events.length).toBeGreaterThan(0);
    expect(page.events.length).toBeLessThan(controller.writer.state.seq);
    // Every field at the schemas' maxima (LIMITS), lists and maps as long as the server's 128 KiB max_payload lets a
    // message be: what the controller must take without stopping, whatever it then answers.
    const x = (n: number) => 'x'.repeat(n);
    const map = (entries: number) => Object.fromEntries(Array.from({ length: entries }, (_, i) => [`${i}`.padEnd(LIMITS.name, 'k'), x(LIMITS.optionValue)]));
    const ids = (n: number, len: number) => Array.from({ length: n }, (_, i) => `${i}`.padStart(len, '0'));
    const node = 'evil';
    const maxima: Record<RpcMethod, unknown> = {
      requestPool: { node, space: x(LIMITS.name), pool: x(LIMITS.address), subPool: x(LIMITS.address), options: map(24), v6: false, requestId: x(LIMITS.requestId) },
      releasePool: { node, poolId: x(LIMITS.poolId) },
      requestAddress: { node, poolId: x(LIMITS.poolId), address: x(LIMITS.address), options: map(24), requestId: x(LIMITS.requestId), kind: 'endpoint' },
      releaseAddress: { node, poolId: x(LIMITS.poolId), address: x(LIMITS.address), allocSeq: Number.MAX_SAFE_INTEGER },
      bindEndpoint: { node, poolId: x(LIMITS.poolId), address: x(LIMITS.address), allocSeq: Number.MAX_SAFE_INTEGER, endpointId: x(LIMITS.dockerId), networkId: x(LIMITS.dockerId) },
      networkRecord: { node, networkId: x(LIMITS.dockerId), poolIds: ids(LIMITS.poolIds, LIMITS.poolId), options: map(20) },
      networkName: { node, networkId: x(LIMITS.dockerId), name: x(LIMITS.name), replica: true },
      networkRemove: { node, networkId: x(LIMITS.dockerId), cluster: true, dryRun: true },
      nodeReport: { node, address: x(LIMITS.hostAddress), version: x(LIMITS.version), endpoints: ids(1800, LIMITS.dockerId), interfaces: ids(64, LIMITS.ifName) },
      readEvents: { fromSeq: 1, limit: LIMITS.readEvents },
      eventsHead: {},
      eventsConsumer: { afterSeq: Number.MAX_SAFE_INTEGER },
      snapshotRead: { part: 1_000_000 },
      snapshotIndex: {},
      snapshotRange: { seq: Number.MAX_SAFE_INTEGER, start: Number.MAX_SAFE_INTEGER - 1, end: Number.MAX_SAFE_INTEGER },
    };
    for (const method of Object.keys(rpc) as RpcMethod[]) {
      const payload = enc.encode(JSON.stringify(maxima[method]));
      expect(payload.byteLength).toBeLessThan(128 * 1024);
      const msg = await evil.nc.request(rpcSubject(method, 'evil'), payload, { timeout: 10_000 });
      const reply = RpcReply.safeParse(msg.json());
      expect({ method, ok: reply.success }).toEqual({ method, ok: true });
    }
    expect(controller.role).toBe('leader');
    expect((await h1.rpc.call('eventsHead', {}, EventsHeadRes)).seq).toBe(controller.writer.committedSeq);
    await h1StillHolds();
  });

  it('an event too large for a NATS message is refused before it is recorded, and publishing goes on', async () => {
    const labels = Object.fromEntries(Array.from({ length: 40 }, (_, k) => [`l${k}`, 'x'.repeat(4096)])); // ~170 KB > 128 KiB
    const before = controller.writer.state.seq;
    await expect(controller.networks.clusterNetworkCreate({ name: 'too-big', definition: { subnets: [{ subnet: '198.18.99.0/24' }], labels } }, { actor: 'user:test' })).rejects.toMatchObject({
      code: 'invalid-argument',
      message: expect.stringMatching(/ClusterNetworkCreated event of \d+ bytes, more than the \d+ bytes/),
    });
    expect(controller.writer.state.seq).toBe(before);
    expect(controller.writer.state.clusterNetworks.has('too-big')).toBe(false);
    // Positive control: the same network with fewer labels is recorded, and the stream keeps up.
    await controller.networks.clusterNetworkCreate({ name: 'small', definition: { subnets: [{ subnet: '198.18.99.0/24' }], labels: { a: 'b' } } }, { actor: 'user:test' });
    const jsm = await jetstreamManager(ops);
    await controller.flushEvents();
    const last = await jsm.streams.getMessage(EVENTS_STREAM, { last_by_subj: eventSubject(CLUSTER_CHAIN, 'ClusterNetworkCreated') });
    expect(JSON.parse(new TextDecoder().decode(last!.data)).data.name).toBe('small');
  });

  it('a stream deleted by an operator is recreated, and views converge', async () => {
    const view = new ClusterView({ nc: h1.nc, rpc: h1.rpc });
    views.push(view);
    await view.start();
    await view.ready();
    const jsm = await jetstreamManager(ops);
    await jsm.streams.delete(EVENTS_STREAM);
    const r = await h2.rpc.call('requestAddress', { node: 'h2', poolId, address: '', options: {}, requestId: 'after-delete', kind: 'endpoint' }, RequestAddressRes);
    await waitFor(async () => (await jsm.streams.info(EVENTS_STREAM).catch(() => undefined)) !== undefined, 20_000, 'the stream to be recreated');
    const r2 = await h2.rpc.call('requestAddress', { node: 'h2', poolId, address: '', options: {}, requestId: 'after-recreate', kind: 'endpoint' }, RequestAddressRes);
    await waitFor(() => view.seq >= r2.allocSeq, 30_000, `the view to converge to seq ${r2.allocSeq}`);
    const mine = allocationsIn(view.state);
    expect(mine.find((a) => a.seq === r.allocSeq)?.node).toBe('h2');
    expect(mine.find((a) => a.seq === r2.allocSeq)?.node).toBe('h2');
    expect(view.seq).toBe(controller.writer.committedSeq);
  });
});
