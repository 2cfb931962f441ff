/** Shared set-up for controller tests on real etcd and NATS. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Controller, type ControllerConfigInput } from '@underlay/controller';
import { RpcClient, connectNats, type NatsConnection } from '@underlay/adapters';
import { RequestAddressRes, RequestPoolRes } from '@underlay/core';
import { startEtcd, startNats, type EtcdService, type NatsService } from '../lab/services';

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

export async function startEnv(): Promise<Env> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-int-'));
  const [etcd, nats] = await Promise.all([startEtcd({ dir }), startNats({ dir })]);
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
      return new RpcClient(nc);
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
