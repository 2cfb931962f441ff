/**
 * In-memory fakes of the interfaces the agent's driver handlers depend on (services/node-agent/src/driver/context.ts):
 * a controller that keeps pools, allocations, bindings and network records; a kernel's links; a local Docker. Each
 * keeps state and checks what it is asked (as the real parts do), records every call, and can be told to fail.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ConflictError,
  DockerContainerSummary,
  DockerNetworkInspect,
  NotFoundError,
  formatValue,
  isPointToPoint,
  parseCidr,
  type Cidr,
} from '@underlay/core';
import { DriverMemory, KeyedMutex, driverContext, type ControllerClient, type Docker, type DriverContext } from '../../services/node-agent/src/driver/context';
import type { LinkInfoLike, LinkOps } from '../../services/node-agent/src/driver/links';
import { LocalStore } from '../../services/node-agent/src/driver/store';

export interface Call {
  method: string;
  req: unknown;
}

interface FakeAlloc {
  seq: number;
  kind?: string;
  endpointId?: string;
  networkId?: string;
}

/** Records every call; `failNext` makes the next call of a method throw (the fakes' common part). */
class Recorder<M> {
  readonly calls: Call[] = [];
  private readonly failures = new Map<string, Error>();

  /** The next call of `method` throws `err`. */
  failNext(method: keyof M & string, err: Error): void {
    this.failures.set(method, err);
  }

  protected enter(method: string, req: unknown): void {
    this.calls.push({ method, req });
    const f = this.failures.get(method);
    if (f) {
      this.failures.delete(method);
      throw f;
    }
  }
}

/** A controller with its IPAM: pools by id (`<space>/<cidr>`), allocations with seqs, bindings, network records. */
export class FakeController extends Recorder<ControllerClient> implements ControllerClient {
  readonly pools = new Map<string, { cidr: Cidr; allocs: Map<string, FakeAlloc> }>();
  readonly networks = new Map<string, { poolIds: string[]; options: Record<string, string>; name?: string }>();
  readonly reports: unknown[] = [];
  /** The verdict networkName answers. */
  nameVerdict: { member: boolean; conflict?: string; seq?: number; chains?: Record<string, number> } = { member: true };
  /** networkRemove refuses with this error (e.g. a ConflictError) when set. */
  removeError?: Error;
  private seq = 100;

  methods(): string[] {
    return this.calls.map((c) => c.method);
  }

  alloc(poolId: string, address: string): FakeAlloc | undefined {
    return this.pools.get(poolId)?.allocs.get(address);
  }

  async requestPool(req: Parameters<ControllerClient['requestPool']>[0]) {
    this.enter('requestPool', req);
    const cidr = parseCidr(req.pool!);
    const poolId = `${req.space}/${req.pool}`;
    if (!this.pools.has(poolId)) this.pools.set(poolId, { cidr, allocs: new Map() });
    return { poolId, pool: req.pool!, data: {} };
  }

  async releasePool(req: Parameters<ControllerClient['releasePool']>[0]) {
    this.enter('releasePool', req);
    if (!this.pools.delete(req.poolId)) throw new NotFoundError(`pool ${req.poolId} not found`);
  }

  async requestAddress(req: Parameters<ControllerClient['requestAddress']>[0]) {
    this.enter('requestAddress', req);
    const pool = this.pools.get(req.poolId);
    if (!pool) throw new NotFoundError(`pool ${req.poolId} not found`);
    let address = req.address;
    // A point-to-point subnet's gateway without --gateway: the first address, reserved for nobody (as decideRequestAddress).
    if (!address && req.options?.['RequestAddressType'] === 'com.docker.network.gateway' && isPointToPoint(pool.cidr)) {
      return { address: `${formatValue(pool.cidr.family, pool.cidr.network)}/${pool.cidr.prefix}`, allocSeq: 0, reserved: false as const };
    }
    if (!address) {
      // The first free host address from .2 up (.1 is the gateway).
      for (let v = pool.cidr.network + 2n; ; v++) {
        const a = formatValue(pool.cidr.family, v);
        if (!pool.allocs.has(a)) {
          address = a;
          break;
        }
      }
    } else if (pool.allocs.has(address)) {
      throw new ConflictError(`address ${address} is in use`);
    }
    const seq = ++this.seq;
    pool.allocs.set(address, { seq, kind: req.kind });
    return { address: `${address}/${pool.cidr.prefix}`, allocSeq: seq };
  }

  async releaseAddress(req: Parameters<ControllerClient['releaseAddress']>[0]) {
    this.enter('releaseAddress', req);
    const pool = this.pools.get(req.poolId);
    const a = pool?.allocs.get(req.address);
    // A release for another allocation of the address is ignored (as the controller does).
    if (a && (req.allocSeq === undefined || req.allocSeq === a.seq)) pool!.allocs.delete(req.address);
  }

  async bindEndpoint(req: Parameters<ControllerClient['bindEndpoint']>[0]) {
    this.enter('bindEndpoint', req);
    const a = this.alloc(req.poolId, req.address);
    if (!a || (req.allocSeq !== undefined && req.allocSeq !== a.seq)) return { bound: false };
    a.endpointId = req.endpointId;
    a.networkId = req.networkId;
    return { bound: true };
  }

  async networkRecord(req: Parameters<ControllerClient['networkRecord']>[0]) {
    this.enter('networkRecord', req);
    this.networks.set(req.networkId, { poolIds: [...(req.poolIds ?? [])], options: { ...(req.options ?? {}) } });
  }

  async networkName(req: Parameters<ControllerClient['networkName']>[0]) {
    this.enter('networkName', req);
    const n = this.networks.get(req.networkId);
    if (n) n.name = req.name;
    return this.nameVerdict;
  }

  async networkRemove(req: Parameters<ControllerClient['networkRemove']>[0], opts?: { deadlineMs?: number }) {
    this.enter('networkRemove', { req, opts });
    if (this.removeError && req.cluster !== false) throw this.removeError;
    if (req.dryRun) return {};
    this.networks.delete(req.networkId);
    return { seq: ++this.seq };
  }

  async nodeReport(report: Parameters<ControllerClient['nodeReport']>[0]) {
    this.enter('nodeReport', report);
    this.reports.push(report);
  }
}

interface FakeLink extends LinkInfoLike {
  up: boolean;
  mac?: string;
  mode?: string;
  flag?: string;
  vlanId?: number;
}

/** A kernel's links: creating an existing name or on a missing parent fails as netlink does. */
export class FakeLinks extends Recorder<LinkOps> implements LinkOps {
  readonly links = new Map<string, FakeLink>();
  private nextIndex = 1;
  closed = false;

  constructor(existing: string[] = []) {
    super();
    for (const name of existing) this.add({ name, kind: 'device', up: true });
  }

  private add(l: Omit<FakeLink, 'index'>): FakeLink {
    if (this.links.has(l.name)) throw Object.assign(new Error(`link ${l.name}: file exists`), { code: 'EEXIST' });
    const link = { ...l, index: this.nextIndex++ };
    this.links.set(l.name, link);
    return link;
  }

  private parentOf(name: string): FakeLink {
    const p = this.links.get(name);
    if (!p) throw new Error(`link ${name}: no such device`);
    return p;
  }

  async getLink(name: string) {
    return this.links.get(name);
  }
  async listLinks() {
    return [...this.links.values()];
  }
  async createMacvlan(o: Parameters<LinkOps['createMacvlan']>[0]) {
    this.enter('createMacvlan', o);
    return this.add({ name: o.name, kind: 'macvlan', parentIndex: this.parentOf(o.parent).index, mode: o.mode, mac: o.mac, up: !!o.up });
  }
  async createIpvlan(o: Parameters<LinkOps['createIpvlan']>[0]) {
    this.enter('createIpvlan', o);
    return this.add({ name: o.name, kind: 'ipvlan', parentIndex: this.parentOf(o.parent).index, mode: o.mode, flag: o.flag, up: !!o.up });
  }
  async createVlan(o: Parameters<LinkOps['createVlan']>[0]) {
    this.enter('createVlan', o);
    return this.add({ name: o.name, kind: 'vlan', parentIndex: this.parentOf(o.parent).index, vlanId: o.vlanId, up: !!o.up });
  }
  async createDummy(o: Parameters<LinkOps['createDummy']>[0]) {
    this.enter('createDummy', o);
    return this.add({ name: o.name, kind: 'dummy', up: !!o.up });
  }
  async setUp(name: string) {
    this.enter('setUp', name);
    this.parentOf(name).up = true;
  }
  async deleteLink(name: string) {
    this.enter('deleteLink', name);
    return this.links.delete(name);
  }
  close(): void {
    this.closed = true;
  }
}

/** A local Docker holding networks as `GET /networks/{id}` shows them (parsed as the adapter parses them). */
export class FakeDocker implements Docker {
  readonly networks = new Map<string, DockerNetworkInspect>();
  readonly calls: Call[] = [];
  /** Docker's socket does not answer. */
  down = false;
  /** What GET /containers/json?all=1 answers (parsed as the adapter parses it). */
  containers: unknown[] = [];

  constructor(networks: unknown[] = []) {
    for (const n of networks) this.put(n);
  }

  put(raw: unknown): DockerNetworkInspect {
    const n = DockerNetworkInspect.parse(raw);
    this.networks.set(n.Id, n);
    return n;
  }

  private enter(method: string, req: unknown): void {
    this.calls.push({ method, req });
    if (this.down) throw new Error('connect ENOENT /var/run/docker.sock');
  }

  async inspectNetwork(id: string) {
    this.enter('inspectNetwork', id);
    return this.networks.get(id) ?? [...this.networks.values()].find((n) => n.Name === id);
  }
  async listNetworks(driver: string) {
    this.enter('listNetworks', driver);
    return [...this.networks.values()].filter((n) => n.Driver === driver).map((n) => ({ ...n, Containers: {} }));
  }
  async listNetworkIds(driver: string) {
    return (await this.listNetworks(driver)).map((n) => n.Id);
  }
  async networkName(id: string) {
    return (await this.inspectNetwork(id))?.Name;
  }
  async listContainers() {
    this.enter('listContainers', undefined);
    return this.containers.map((c) => DockerContainerSummary.parse(c));
  }
  async createNetwork(body: Record<string, unknown>) {
    this.enter('createNetwork', body);
    const id = `${this.networks.size + 1}`.padStart(64, 'f');
    this.put({ Id: id, Name: body.Name, Driver: body.Driver, Options: body.Options ?? {}, Labels: body.Labels ?? {} });
    return id;
  }
  async deleteNetwork(id: string) {
    this.enter('deleteNetwork', id);
    return this.networks.delete(id);
  }
}

/** A DriverContext of fakes on a fresh state directory (removed by `cleanup`). */
export function fakeDriver(o: { links?: string[]; docker?: unknown[]; parentMap?: Record<string, string> } = {}) {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-driver-'));
  const controller = new FakeController();
  const links = new FakeLinks(o.links ?? ['eth1']);
  const docker = new FakeDocker(o.docker ?? []);
  const memory = new DriverMemory();
  const logs: string[] = [];
  let changed = 0;
  const ctx: DriverContext = driverContext({
    node: 'h1',
    store: new LocalStore(stateDir),
    links,
    controller,
    docker,
    lock: new KeyedMutex(),
    log: (m) => logs.push(m),
    memory,
    parentMap: o.parentMap ?? {},
    onNetworksChanged: () => {
      changed++;
    },
  });
  return {
    ctx,
    controller,
    links,
    docker,
    memory,
    logs,
    stateDir,
    /** How many times the handlers said this host's networks changed. */
    changed: () => changed,
    /** A store read back from the state directory (what a restarted agent would find). */
    reread: () => new LocalStore(stateDir),
    cleanup: () => fs.rmSync(stateDir, { recursive: true, force: true }),
  };
}
