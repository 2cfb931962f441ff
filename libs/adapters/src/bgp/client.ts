/**
 * A typed client of gobgpd 3.10's gRPC API (`apipb.GobgpApi`), over @grpc/grpc-js with the pinned protos:
 * global config (GetBgp/StartBgp), peers (AddPeer/DeletePeer/ListPeer), unicast paths (AddPath/DeletePath/
 * ListPath) and best-path and peer events (WatchEvent). Only loopback and unix-socket targets are accepted.
 */
import type * as grpc from '@grpc/grpc-js';
/** gRPC loaded on first use: an agent without --bgp-api never needs it (it took ~70 ms of every start, and proto-loader ~50). */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const grpcLib = (): typeof import('@grpc/grpc-js') => require('@grpc/grpc-js') as typeof import('@grpc/grpc-js');
import {
  GOBGP_PROTO_DIR,
  GOBGP_PROTO_FILES,
  apiFamily,
  canonicalPrefix,
  familyOfCidr,
  pathFromApi,
  routeToApiPath,
  type ApiFamily,
  type ApiPath,
  type BgpFamily,
  type BgpPath,
  type BgpRoute,
} from './codec.js';
import { gobgpTarget } from './target.js';
import { UnderlayError } from '@underlay/core';

export type BgpSessionState = 'UNKNOWN' | 'IDLE' | 'CONNECT' | 'ACTIVE' | 'OPENSENT' | 'OPENCONFIRM' | 'ESTABLISHED';

export interface BgpGlobal {
  asn: number;
  routerId: string;
  /** -1: no listener (dial-out only). */
  listenPort: number;
  listenAddresses: string[];
}

export interface BgpPeerConfig {
  address: string;
  asn: number;
  /** Free text kept by gobgpd; underlay marks the peers it adds with it. */
  description?: string;
  localAddress?: string;
  remotePort?: number;
  passive?: boolean;
  /** Address families to negotiate (default ipv4 and ipv6 unicast). */
  families?: BgpFamily[];
  /** Seconds between connection attempts (gobgpd's default is 120). */
  connectRetry?: number;
  holdTime?: number;
  keepaliveInterval?: number;
  ebgpMultihopTtl?: number;
}

export interface BgpPeerInfo {
  address: string;
  asn: number;
  description: string;
  state: BgpSessionState;
  adminState: string;
  routerId: string;
  /** UPDATE messages received / sent, and received withdrawals (prefixes). */
  updatesReceived: number;
  updatesSent: number;
  withdrawPrefixesReceived: number;
  families: BgpFamily[];
}

export interface ListPathOptions {
  family: BgpFamily;
  /** global (default: the best-path RIB with every path), adj-in / adj-out (of `peer`). */
  table?: 'global' | 'adj-in' | 'adj-out';
  peer?: string;
  /** Exact prefixes to look up (default: all). */
  prefixes?: string[];
}

export interface WatchHandlers {
  /** Best-path changes (a withdrawal has `withdraw: true`); the first batch after `onInit` replays the current best paths. */
  onPaths?(paths: BgpPath[]): void;
  /** Peer INIT/STATE events. */
  onPeer?(ev: { type: string; address: string; asn: number; state: BgpSessionState }): void;
  /** After the peer replay (END_OF_INIT): the next `onPaths` call is the full replay of best paths. */
  onInit?(): void;
  /** The stream ended (gobgpd gone, or cancelled: then err is undefined). */
  onEnd?(err?: Error): void;
}

export interface BgpWatch {
  cancel(): void;
}

/** gobgpd is not reachable (not started, restarting, wrong socket): a later call may succeed. */
const grpcUnavailable = (code: number): boolean => code === grpcLib().status.UNAVAILABLE || code === grpcLib().status.DEADLINE_EXCEEDED;

/** A failed gobgpd call: code `gobgp`, the gRPC status in `grpcCode`; retriable while gobgpd is not reachable. */
export class GobgpError extends UnderlayError {
  constructor(
    readonly method: string,
    readonly grpcCode: number,
    readonly details: string,
    cause?: unknown,
  ) {
    super('gobgp', `gobgpd ${method}: ${details || grpcLib().status[grpcCode] || `code ${grpcCode}`}`, { retriable: grpcUnavailable(grpcCode), cause });
    this.name = 'GobgpError';
  }

  /** gobgpd is not reachable (not started, restarting, wrong socket). */
  get unavailable(): boolean {
    return grpcUnavailable(this.grpcCode);
  }
}

export interface GobgpClientOptions {
  /** Per unary call (default 5 s). */
  deadlineMs?: number;
}

type AnyClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

let ctorCache: grpc.ServiceClientConstructor | undefined;

function serviceConstructor(): grpc.ServiceClientConstructor {
  if (ctorCache) return ctorCache;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const protoLoader = require('@grpc/proto-loader') as typeof import('@grpc/proto-loader');
  const def = protoLoader.loadSync([...GOBGP_PROTO_FILES], {
    includeDirs: [GOBGP_PROTO_DIR],
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpcLib().loadPackageDefinition(def) as unknown as { apipb: { GobgpApi: grpc.ServiceClientConstructor } };
  ctorCache = pkg.apipb.GobgpApi;
  return ctorCache;
}

const SESSION_STATES: BgpSessionState[] = ['UNKNOWN', 'IDLE', 'CONNECT', 'ACTIVE', 'OPENSENT', 'OPENCONFIRM', 'ESTABLISHED'];
const sessionState = (v: unknown): BgpSessionState =>
  typeof v === 'number' ? (SESSION_STATES[v] ?? 'UNKNOWN') : SESSION_STATES.includes(v as BgpSessionState) ? (v as BgpSessionState) : 'UNKNOWN';

const familyName = (f: ApiFamily | undefined | null): BgpFamily | undefined =>
  f?.safi === 'SAFI_UNICAST' ? (f.afi === 'AFI_IP' ? 'ipv4' : f.afi === 'AFI_IP6' ? 'ipv6' : undefined) : undefined;

export class GobgpClient {
  private readonly client: AnyClient;
  private readonly deadlineMs: number;
  private closed = false;

  private constructor(
    readonly target: string,
    opts: GobgpClientOptions,
  ) {
    const Ctor = serviceConstructor();
    this.client = new Ctor(target, grpcLib().credentials.createInsecure(), {
      // gobgpd may start after us or restart: keep reconnecting quickly instead of grpc's 120 s ceiling.
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2_000,
    }) as AnyClient;
    this.deadlineMs = opts.deadlineMs ?? 5_000;
  }

  /**
   * A client for the API at `target` (`127.0.0.1:50051`, `[::1]:50051`, `unix:/run/gobgpd.sock`). Connects
   * lazily; throws GobgpTargetError for a non-loopback address.
   */
  static connect(target: string, opts: GobgpClientOptions = {}): GobgpClient {
    return new GobgpClient(gobgpTarget(target), opts);
  }

  /** Resolves once the channel is connected (rejects after timeoutMs). */
  waitReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(new GobgpError('connect', grpcLib().status.UNAVAILABLE, `${this.target}: ${err.message}`, err)) : resolve()));
    });
  }

  private unary<T = any>(method: string, req: object, deadlineMs = this.deadlineMs): Promise<T> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new GobgpError(method, grpcLib().status.CANCELLED, 'client closed'));
      const fn = this.client[method] as (req: object, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: T) => void) => void;
      fn.call(this.client, req, new (grpcLib().Metadata)(), { deadline: Date.now() + deadlineMs }, (err, res) => {
        if (err) reject(new GobgpError(method, err.code, err.details, err));
        else resolve(res);
      });
    });
  }

  private collect<T = any>(method: string, req: object, deadlineMs = this.deadlineMs * 2): Promise<T[]> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new GobgpError(method, grpcLib().status.CANCELLED, 'client closed'));
      const fn = this.client[method] as (req: object, md: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientReadableStream<T>;
      const call = fn.call(this.client, req, new (grpcLib().Metadata)(), { deadline: Date.now() + deadlineMs });
      const out: T[] = [];
      call.on('data', (d: T) => out.push(d));
      call.on('error', (err: grpc.ServiceError) => reject(new GobgpError(method, err.code, err.details, err)));
      call.on('end', () => resolve(out));
    });
  }

  /** The running global config, or undefined while gobgpd has not been started (no AS yet). */
  async getBgp(): Promise<BgpGlobal | undefined> {
    const r = await this.unary<{ global?: any }>('GetBgp', {});
    const g = r.global;
    if (!g || !g.asn) return undefined;
    return { asn: Number(g.asn), routerId: String(g.routerId ?? ''), listenPort: Number(g.listenPort ?? 0), listenAddresses: [...(g.listenAddresses ?? [])] };
  }

  /**
   * Starts BGP. gobgpd 3.10 does not refuse a second StartBgp (it rebuilds its RIB), so call getBgp() first.
   * listenPort defaults to -1 (no listener: this speaker only dials out); 0 would mean 179 on every address.
   */
  async startBgp(g: { asn: number; routerId: string; listenPort?: number; listenAddresses?: string[] }): Promise<void> {
    const listenPort = g.listenPort ?? -1;
    if (listenPort === 0) throw new TypeError('gobgp startBgp: give listenPort explicitly (-1 for none); 0 would listen on 179 on every address');
    await this.unary('StartBgp', { global: { asn: g.asn, routerId: g.routerId, listenPort, listenAddresses: g.listenAddresses ?? [] } });
  }

  async stopBgp(): Promise<void> {
    await this.unary('StopBgp', {});
  }

  async addPeer(p: BgpPeerConfig): Promise<void> {
    const families = p.families ?? ['ipv4', 'ipv6'];
    const peer: Record<string, unknown> = {
      conf: { neighborAddress: p.address, peerAsn: p.asn, description: p.description ?? '' },
      afiSafis: families.map((f) => ({ config: { family: apiFamily(f), enabled: true } })),
      transport: { localAddress: p.localAddress ?? '', remotePort: p.remotePort ?? 0, passiveMode: p.passive ?? false },
      timers: { config: { connectRetry: p.connectRetry ?? 0, holdTime: p.holdTime ?? 0, keepaliveInterval: p.keepaliveInterval ?? 0 } },
    };
    if (p.ebgpMultihopTtl) peer.ebgpMultihop = { enabled: true, multihopTtl: p.ebgpMultihopTtl };
    await this.unary('AddPeer', { peer });
  }

  async deletePeer(address: string): Promise<void> {
    await this.unary('DeletePeer', { address });
  }

  async listPeers(address = ''): Promise<BgpPeerInfo[]> {
    const rows = await this.collect<{ peer?: any }>('ListPeer', { address, enableAdvertised: false });
    return rows
      .map((r) => r.peer)
      .filter((p): p is any => !!p)
      .map((p) => ({
        address: String(p.conf?.neighborAddress || p.state?.neighborAddress || ''),
        asn: Number(p.conf?.peerAsn || p.state?.peerAsn || 0),
        description: String(p.conf?.description ?? ''),
        state: sessionState(p.state?.sessionState),
        adminState: String(p.state?.adminState ?? ''),
        routerId: String(p.state?.routerId ?? ''),
        updatesReceived: Number(p.state?.messages?.received?.update ?? 0),
        updatesSent: Number(p.state?.messages?.sent?.update ?? 0),
        withdrawPrefixesReceived: Number(p.state?.messages?.received?.withdrawPrefix ?? 0),
        families: ((p.afiSafis ?? []) as any[]).map((a) => familyName(a.config?.family)).filter((f): f is BgpFamily => !!f),
      }));
  }

  /** Originates a route in the global RIB (replacing this speaker's own path for the same prefix); returns its uuid. */
  async addPath(route: BgpRoute): Promise<Uint8Array> {
    const r = await this.unary<{ uuid?: Uint8Array }>('AddPath', { tableType: 'GLOBAL', vrfId: '', path: routeToApiPath(route) });
    return r.uuid ?? new Uint8Array();
  }

  /**
   * Withdraws one locally originated path: by uuid (from addPath), or by prefix (the NLRI; attributes are not
   * compared). Never sends an empty request (gobgpd would delete every local path).
   */
  async deletePath(what: { uuid: Uint8Array; family: BgpFamily } | { prefix: string; nextHop?: string }): Promise<void> {
    if ('uuid' in what) {
      if (!what.uuid || what.uuid.length === 0) throw new TypeError('gobgp deletePath: empty uuid (would delete every local path)');
      await this.unary('DeletePath', { tableType: 'GLOBAL', vrfId: '', family: apiFamily(what.family), uuid: what.uuid });
      return;
    }
    const prefix = canonicalPrefix(what.prefix);
    const path = routeToApiPath({ prefix, nextHop: what.nextHop ?? '' }, { withdraw: true });
    await this.unary('DeletePath', { tableType: 'GLOBAL', vrfId: '', family: path.family, path });
  }

  /** Paths of one family: every path of the global RIB (with `best`), or a peer's adj-in / adj-out. */
  async listPath(o: ListPathOptions): Promise<BgpPath[]> {
    const table = o.table ?? 'global';
    if (table !== 'global' && !o.peer) throw new TypeError(`gobgp listPath: ${table} needs a peer`);
    for (const p of o.prefixes ?? []) {
      if (familyOfCidr(p) !== o.family) throw new TypeError(`gobgp listPath: ${p} is not ${o.family}`);
    }
    const rows = await this.collect<{ destination?: { prefix?: string; paths?: ApiPath[] } }>('ListPath', {
      tableType: table === 'global' ? 'GLOBAL' : table === 'adj-in' ? 'ADJ_IN' : 'ADJ_OUT',
      name: table === 'global' ? '' : o.peer,
      family: apiFamily(o.family),
      prefixes: (o.prefixes ?? []).map((p) => ({ prefix: canonicalPrefix(p), type: 'EXACT' })),
      sortType: 'PREFIX',
    });
    const out: BgpPath[] = [];
    for (const r of rows) {
      for (const p of r.destination?.paths ?? []) {
        const path = pathFromApi(p);
        if (path) out.push(path);
      }
    }
    return out;
  }

  /**
   * Watches best-path changes (replaying the current best paths first) and, with onPeer/onInit, peer
   * events. The replay of best paths comes right after the peers' END_OF_INIT, so `onInit` then the next
   * `onPaths` is a complete snapshot.
   */
  watch(h: WatchHandlers, o: { init?: boolean } = {}): BgpWatch {
    const req = { peer: {}, table: { filters: [{ type: 'BEST', init: o.init ?? true }] } };
    let ended = false;
    const end = (err?: Error) => {
      if (ended) return;
      ended = true;
      h.onEnd?.(err);
    };
    if (this.closed) {
      setImmediate(() => end(new GobgpError('WatchEvent', grpcLib().status.CANCELLED, 'client closed')));
      return { cancel: () => {} };
    }
    const deliver = (ev: any) => {
      if (ev.event === 'peer' && ev.peer) {
        const type = String(ev.peer.type ?? '');
        if (type === 'END_OF_INIT') h.onInit?.();
        else {
          const p = ev.peer.peer ?? {};
          h.onPeer?.({
            type,
            address: String(p.state?.neighborAddress || p.conf?.neighborAddress || ''),
            asn: Number(p.state?.peerAsn || p.conf?.peerAsn || 0),
            state: sessionState(p.state?.sessionState),
          });
        }
      } else if (ev.event === 'table' && ev.table) {
        const paths: BgpPath[] = [];
        for (const p of (ev.table.paths ?? []) as ApiPath[]) {
          const path = pathFromApi(p);
          if (path) paths.push(path);
        }
        h.onPaths?.(paths);
      }
    };
    const call = (this.client.WatchEvent as (req: object) => grpc.ClientReadableStream<any>).call(this.client, req);
    let cancelled = false;
    call.on('data', (ev: any) => {
      try {
        deliver(ev);
      } catch {
        // a handler's failure must not become an uncaught exception in the stream
      }
    });
    call.on('error', (err: grpc.ServiceError) => end(cancelled && err.code === grpcLib().status.CANCELLED ? undefined : new GobgpError('WatchEvent', err.code, err.details, err)));
    call.on('end', () => end(cancelled ? undefined : new GobgpError('WatchEvent', grpcLib().status.UNAVAILABLE, 'stream ended')));
    return {
      cancel: () => {
        if (ended) return;
        cancelled = true;
        call.cancel();
      },
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }
}
