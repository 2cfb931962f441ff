/**
 * The controller: the only writer of cluster state. Loads the log from etcd, answers agents over
 * NATS, commits events in groups, publishes them on JetStream, and serves the HTTP API.
 */
import type { Server } from 'node:http';
import type { Subscription } from '@nats-io/transport-node';
import {
  ReadEventsReq,
  ReleaseAddressReq,
  ReleasePoolReq,
  RequestAddressReq,
  RequestPoolReq,
  traceIdOf,
} from '@underlay/core';
import { EtcdEventLog, EventPublisher, connectNats, serveRpc, type NatsConnection, type RpcContext } from '@underlay/adapters';
import { ControllerConfig } from './config.js';
import { IpamService } from './ipam-service.js';
import { OrderedPublisher } from './publisher.js';
import { createHttpApi } from './http-api.js';

export type Logger = (msg: string) => void;

export class Controller {
  readonly config: ControllerConfig;
  readonly log: EtcdEventLog;
  readonly ipam: IpamService;
  private nc?: NatsConnection;
  private publisher?: OrderedPublisher;
  private subs: Subscription[] = [];
  private http?: Server;
  /** The bound HTTP address once started. */
  httpAddress?: { host: string; port: number };

  constructor(config: Partial<ControllerConfig> & Pick<ControllerConfig, 'etcd' | 'nats'>, private readonly logger: Logger = () => {}) {
    this.config = ControllerConfig.parse(config);
    this.log = new EtcdEventLog({ endpoints: this.config.etcd });
    this.ipam = new IpamService({ log: this.log, onCommitted: (evs) => this.publisher?.enqueue(evs), logger });
  }

  async start(): Promise<void> {
    await this.ipam.load();
    this.logger(`state loaded from etcd at seq ${this.ipam.state.seq}`);
    this.nc = await connectNats(this.config.nats, `underlay-controller-${this.config.name}`);
    this.publisher = new OrderedPublisher(await EventPublisher.open(this.nc), this.log, this.logger);
    await this.publisher.catchUp();
    const ctx = (req: { node: string }, rc: RpcContext) => ({ actor: `node:${req.node}`, traceId: traceIdOf(rc.traceparent) });
    this.subs.push(
      serveRpc(this.nc, 'requestPool', RequestPoolReq, (r, rc) => this.ipam.requestPool(r, ctx(r, rc))),
      serveRpc(this.nc, 'releasePool', ReleasePoolReq, (r, rc) => this.ipam.releasePool(r, ctx(r, rc))),
      serveRpc(this.nc, 'requestAddress', RequestAddressReq, (r, rc) => this.ipam.requestAddress(r, ctx(r, rc))),
      serveRpc(this.nc, 'releaseAddress', ReleaseAddressReq, (r, rc) => this.ipam.releaseAddress(r, ctx(r, rc))),
      serveRpc(this.nc, 'readEvents', ReadEventsReq, async (r) => {
        const out = [];
        for await (const page of this.log.read(r.fromSeq, r.limit)) {
          out.push(...page);
          if (out.length >= r.limit) break;
        }
        return { events: out.slice(0, r.limit) };
      }),
    );
    await this.nc.flush();
    const [host, port] = splitHostPort(this.config.listen);
    this.http = createHttpApi(this.ipam, this.log);
    await new Promise<void>((resolve, reject) => {
      this.http!.once('error', reject);
      this.http!.listen(port, host, () => resolve());
    });
    const addr = this.http.address();
    if (addr && typeof addr === 'object') this.httpAddress = { host: addr.address, port: addr.port };
    this.logger(`controller ready: NATS ${this.config.nats}, HTTP ${this.httpAddress?.host}:${this.httpAddress?.port}`);
  }

  /** Waits until every committed event has been handed to JetStream. */
  async flushEvents(): Promise<void> {
    await this.publisher?.flush();
  }

  async stop(): Promise<void> {
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    this.publisher?.stop();
    await this.publisher?.flush();
    if (this.http) {
      const closed = new Promise<void>((r) => this.http!.close(() => r()));
      this.http.closeAllConnections();
      await closed;
    }
    if (this.nc) await this.nc.drain().catch(() => this.nc?.close());
    this.log.close();
  }
}

export function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i) || '127.0.0.1', Number(s.slice(i + 1))];
}
