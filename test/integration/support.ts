/** Shared set-up for controller tests on real etcd and NATS. */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Controller, type ControllerConfigInput } from '@underlay/controller';
import { RpcClient, connectNats, type NatsConnection } from '@underlay/adapters';
import { BindEndpointRes, EmptyRes, NetworkNameRes, RequestAddressRes, RequestPoolRes, type NodeReport } from '@underlay/core';
import { startEtcd, startNats, type EtcdService, type NatsService } from '../lab/services';
import { AnyNodeRpc } from '../lab/any-node-rpc';
export { AnyNodeRpc };

export const GW = { RequestAddressType: 'com.docker.network.gateway' };
export const mac = (i: number) =>
  `02:${[(i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255, 0xaa].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;

export interface Env {
  dir: string;
  etcd: EtcdService;
  nats: NatsService;
  controllers: Controller[];
  conns: NatsConnection[];
  controller(extra?: Partial<ControllerConfigInput>): Promise<Controller>;
  client(): Promise<RpcClient>;
  close(): Promise<void>;
}

/** `natsConfig`: nats-server configuration text (e.g. a small `max_payload`). */
export async function startEnv(o: { natsConfig?: string } = {}): Promise<Env> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-int-'));
  const [etcd, nats] = await Promise.all([startEtcd({ dir }), startNats({ dir, ...(o.natsConfig !== undefined ? { config: o.natsConfig } : {}) })]);
  const env: Env = {
    dir,
    etcd,
    nats,
    controllers: [],
    conns: [],
    async controller(extra = {}) {
      const name = `c${env.controllers.length + 1}`;
      const logger = process.env.UNDERLAY_TEST_LOG ? (m: string) => process.stderr.write(`${new Date().toISOString()} ${name}: ${m}\n`) : undefined;
      const c = new Controller({ etcd: [etcd.url], nats: nats.url, listen: '127.0.0.1:0', name, ...extra }, logger);
      env.controllers.push(c);
      await c.start();
      await c.whenLeader();
      return c;
    },
    async client() {
      const nc = await connectNats(nats.url, 'test-agent');
      env.conns.push(nc);
      return new AnyNodeRpc(nc);
    },
    async close() {
      for (const c of env.controllers) await c.stop().catch(() => {});
      for (const nc of env.conns) await nc.close().catch(() => {});
      await Promise.all([etcd.stop(), nats.stop()]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return env;
}

/** What an agent does for Docker: RequestPool, then RequestAddress calls. */
export class FakeDockerHost {
  constructor(readonly rpc: RpcClient, readonly node: string) {}
  pool(pool: string, o: { subPool?: string; options?: Record<string, string>; v6?: boolean } = {}) {
    return this.rpc.call('requestPool', { node: this.node, space: 'underlay', pool, subPool: o.subPool ?? '', options: o.options ?? {}, v6: o.v6 ?? pool.includes(':') }, RequestPoolRes);
  }
  gateway(poolId: string, address = '') {
    return this.rpc.call('requestAddress', { node: this.node, poolId, address, options: GW }, RequestAddressRes);
  }
  aux(poolId: string, address: string) {
    return this.rpc.call('requestAddress', { node: this.node, poolId, address, options: {} }, RequestAddressRes);
  }
  address(poolId: string, i: number, address = '') {
    return this.rpc.call('requestAddress', { node: this.node, poolId, address, options: { 'com.docker.network.endpoint.macaddress': mac(i) } }, RequestAddressRes, { deadlineMs: 60_000 });
  }
}

/** Runs `count` calls with at most `window` in flight; returns results in call order. */
export async function windowed<T>(count: number, window: number, call: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(window, count) }, async () => {
      while (next < count) {
        const i = next++;
        out[i] = await call(i);
      }
    }),
  );
  return out;
}

/** A node's replica of a cluster network, as its agent names it to the controller. */
export interface Replica {
  node: string;
  networkId: string;
  name: string;
}

/** The parts of a cluster network's definition an agent uses to make its replica (the first subnet's pool). */
export interface ReplicaDefinition {
  options: Record<string, string>;
  ipamOptions?: Record<string, string>;
  subnets: ReadonlyArray<{ subnet: string; gateway?: string; ipRange?: string }>;
}

/**
 * What a node's agent does over RPC when it makes its replica of a cluster network and a container joins
 * it: RequestPool (the first subnet, its range and the IPAM options), the gateway, networkRecord,
 * networkName (its answer is `named`), an endpoint address (`requestId`) and bindEndpoint (`endpointId`).
 */
export async function joinReplica(rpc: RpcClient, r: Replica, definition: ReplicaDefinition, ep: { requestId: string; endpointId: string }) {
  const { node, networkId } = r;
  const s = definition.subnets[0]!;
  const pool = await rpc.call('requestPool', { node, space: 'underlay', pool: s.subnet, subPool: s.ipRange ?? '', options: definition.ipamOptions ?? {}, v6: false }, RequestPoolRes);
  await rpc.call('requestAddress', { node, poolId: pool.poolId, address: s.gateway ?? '', options: GW }, RequestAddressRes);
  await rpc.call('networkRecord', { node, networkId, poolIds: [pool.poolId], options: definition.options }, EmptyRes);
  const named = await rpc.call('networkName', { node, networkId, name: r.name, definition }, NetworkNameRes);
  const a = await rpc.call('requestAddress', { node, poolId: pool.poolId, address: '', options: {}, requestId: ep.requestId, kind: 'endpoint' }, RequestAddressRes);
  const address = a.address.split('/')[0]!;
  await rpc.call('bindEndpoint', { node, poolId: pool.poolId, address, allocSeq: a.allocSeq, endpointId: ep.endpointId, networkId }, BindEndpointRes);
  return { poolId: pool.poolId, named, address, cidr: a.address };
}

/**
 * The report of a node (203.0.113.1, eth0 and eth1) with its replica of `r` ready on eth1 and one endpoint
 * joined to it (container nginx-1), with `cidr` its address; `extra` replaces fields.
 */
export function joinedReport(r: Replica, endpointId: string, cidr: string, extra: Partial<NodeReport> = {}): NodeReport {
  return {
    node: r.node,
    address: '203.0.113.1',
    version: '0.1.0',
    interfaces: ['eth0', 'eth1'],
    endpoints: [endpointId],
    endpointStates: [{ endpointId, networkId: r.networkId, network: r.name, container: 'nginx-1', containerId: 'c0ffee', address: cidr, state: 'joined' }],
    networkStates: [{ name: r.name, networkId: r.networkId, state: 'ready', parent: 'eth1', replica: true }],
    ...extra,
  };
}

/** Sends a node report as the node's agent does. */
export async function sendReport(rpc: RpcClient, report: NodeReport): Promise<void> {
  await rpc.call('nodeReport', report, EmptyRes);
}

/** A child process with its stdout and stderr collected as text (`out`, `err`); `exited` resolves to its exit code. */
export function spawnCollecting(cmd: string, args: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(cmd, args, { env });
  const io = { child, out: '', err: '', exited: undefined as unknown as Promise<number | null> };
  child.stdout.on('data', (d: Buffer) => (io.out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (io.err += d.toString()));
  io.exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return io;
}
