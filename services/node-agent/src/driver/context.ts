/**
 * What the driver's handlers depend on: small interfaces, each implemented by an adapter in the agent and by an
 * in-memory fake in the unit tests (test/unit/driver-fakes.ts).
 *  - ControllerClient: the controller RPCs the handlers make, for this node (over NATS: controller-client.ts);
 *  - Docker: what the agent reads from and asks of the local Docker Engine (adapters' DockerEngine);
 *  - LinkOps (links.ts): the kernel's links (adapters' netlink LinkOps);
 *  - LocalStore (store.ts), a KeyedMutex per network, and the driver's shared memory (DriverMemory).
 * Each handler takes only the ones it uses (IpamDeps, EndpointDeps, ...); the agent builds one object holding all
 * of them (DriverContext) and passes it everywhere.
 */
import type { AddressHolds } from './address-holds.js';
import type { StickyIdentities } from './sticky.js';
import type { z } from 'zod';
import type {
  BindEndpointReq,
  BindEndpointRes,
  DockerContainerSummary,
  DockerNetworkInspect,
  NetworkNameReq,
  NetworkNameRes,
  NetworkRecordReq,
  NetworkRemoveReq,
  NetworkRemoveRes,
  NodeReport,
  ReleaseAddressReq,
  ReleasePoolReq,
  RequestAddressReq,
  RequestAddressRes,
  RequestPoolReq,
  RequestPoolRes,
} from '@underlay/core';
import type { Announcer } from './announce.js';
import type { LinkOps } from './links.js';
import type { LocalStore } from './store.js';

/** Serialises work per key (a network id), so concurrent calls from Docker cannot interleave badly. */
export class KeyedMutex {
  private tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}

/** A request as the handlers make it: the client fills in the node it speaks for. */
type Req<S extends z.ZodType> = Omit<z.input<S>, 'node'>;

/** Per-call options of a controller RPC. */
export interface ControllerCallOptions {
  /** Time to keep retrying retriable failures. */
  deadlineMs?: number;
  /** Per attempt (default 10 s; an attempt started before the deadline runs its whole timeout). */
  timeoutMs?: number;
}

/**
 * The controller RPCs the agent makes, for one node. Failures are UnderlayErrors with the controller's code
 * (`conflict`, `unavailable` once the retries ran out, ...).
 */
export interface ControllerClient {
  requestPool(req: Req<typeof RequestPoolReq>): Promise<RequestPoolRes>;
  releasePool(req: Req<typeof ReleasePoolReq>): Promise<void>;
  requestAddress(req: Req<typeof RequestAddressReq>): Promise<RequestAddressRes>;
  releaseAddress(req: Req<typeof ReleaseAddressReq>): Promise<void>;
  bindEndpoint(req: Req<typeof BindEndpointReq>): Promise<z.infer<typeof BindEndpointRes>>;
  networkRecord(req: Req<typeof NetworkRecordReq>): Promise<void>;
  networkName(req: Req<typeof NetworkNameReq>): Promise<z.infer<typeof NetworkNameRes>>;
  /** `seq` (when given): the event that recorded the removal. */
  networkRemove(req: Req<typeof NetworkRemoveReq>, opts?: ControllerCallOptions): Promise<z.infer<typeof NetworkRemoveRes>>;
  nodeReport(report: NodeReport, opts?: ControllerCallOptions): Promise<void>;
}

/** The local Docker Engine, as the agent uses it (typed answers, parsed by the adapter). */
export interface Docker {
  /** undefined when Docker has no network by that id. */
  inspectNetwork(id: string): Promise<DockerNetworkInspect | undefined>;
  listNetworks(driver: string): Promise<DockerNetworkInspect[]>;
  listNetworkIds(driver: string): Promise<string[]>;
  networkName(id: string): Promise<string | undefined>;
  /** Every container (GET /containers/json?all=1), with its networks; safe during a plugin call (see sticky.ts). */
  listContainers(): Promise<DockerContainerSummary[]>;
  /** Resolves to the new network's id. */
  createNetwork(body: Record<string, unknown>, timeoutMs?: number): Promise<string>;
  /** false when Docker had no such network. */
  deleteNetwork(id: string, timeoutMs?: number): Promise<boolean>;
}

export type Log = (msg: string) => void;

/** The last error of an endpoint's Docker call, for status reports. */
export interface EndpointError {
  networkId: string;
  error: string;
  atMs: number;
}

/** The controller's answer to a network's name and definition (`network.name`). */
export interface NameAnswer {
  member: boolean;
  conflict?: string;
  seq?: number;
  chains?: Readonly<Record<string, number>>;
}

/**
 * What the driver remembers between Docker's calls besides its store (lost on restart, rebuilt by Docker's next
 * calls): shared by the handlers, the replica reconcile and the status report.
 */
export class DriverMemory {
  /** The pool this node's Docker requested last for each CIDR: CreateNetwork names only the CIDR, right after RequestPool. */
  readonly recentPools = new Map<string, string>();
  /**
   * Point-to-point pools whose gateway the controller answered without reserving it (no --gateway): pool id → that
   * address. CreateNetwork then records no gateway (Docker still passes the address).
   */
  readonly unreservedGateways = new Map<string, string>();
  /**
   * When this host's Docker last asked for each pool (pool id → ms, set as the request starts): a pool Docker asked
   * for a moment ago belongs to a network being created, and is not given back for a record removed meanwhile.
   */
  readonly poolRequestedAt = new Map<string, number>();
  /**
   * Endpoint addresses Docker asked for by name (`--ip`, `--ip6`): `<pool id>|<address>`. Released at once, not held:
   * the container asks for the same address again when it restarts.
   */
  readonly namedAddresses = new Set<string>();
  /** The last error of each endpoint's Docker calls, for status reports (kept a while after the endpoint is gone). */
  readonly endpointErrors = new Map<string, EndpointError>();
  /** Docker networks the controller refused (same name, other definition): id → why. */
  readonly conflicts = new Map<string, string>();
  private changeSeq = 0;
  private readonly changeChains: Record<string, number> = {};
  private defining = 0;
  private readonly unanswered = new Set<string>();

  /** The replica reconcile waits until the cluster view has reached this seq (the last change this agent caused). */
  get awaitSeq(): number {
    return this.changeSeq;
  }

  /**
   * With interest-based delivery, what the view must have read of each chain instead (the heads the controller
   * answered with the change; empty: the controller gave none, and `awaitSeq` is compared with the view's seq).
   */
  get awaitChains(): Readonly<Record<string, number>> {
    return this.changeChains;
  }

  /**
   * Names and definitions sent to the controller and not answered yet, and networks whose last one failed (the
   * controller may have recorded it all the same: a deadline that ran out). The answer brings the chain heads to wait
   * for; until then the view may already hold the host chain's `NetworkNamed` of a new cluster network without the
   * cluster chain's `ClusterNetworkCreated` (two chains, read by two consumers), which looks like a network removed
   * from the cluster.
   */
  get definesInFlight(): number {
    return this.defining + this.unanswered.size;
  }

  /**
   * Sends network `networkId`'s name and definition (`send`), counted in `definesInFlight` until it is answered, and
   * records the heads of the answer before the count drops (nothing runs in between).
   */
  async define(networkId: string, send: () => Promise<NameAnswer>): Promise<NameAnswer> {
    this.defining++;
    try {
      const r = await send();
      if (r.seq !== undefined) this.changeRecorded(r.seq, r.chains);
      this.unanswered.delete(networkId);
      return r;
    } catch (e) {
      this.unanswered.add(networkId);
      throw e;
    } finally {
      this.defining--;
    }
  }

  /** Whether the last define of network `networkId` failed (the replica reconcile sends it again). */
  defineFailed(networkId: string): boolean {
    return this.unanswered.has(networkId);
  }

  /** Network `networkId` is gone from this host: a define of it that failed no longer counts. */
  networkGone(networkId: string): void {
    this.unanswered.delete(networkId);
  }

  /**
   * A change this agent caused (a removal, a network named or defined) was recorded at `seq` (`chains`: heads then):
   * the replica reconcile acts only on a view that has seen it.
   */
  changeRecorded(seq: number, chains?: Readonly<Record<string, number>>): void {
    this.changeSeq = Math.max(this.changeSeq, seq);
    for (const [c, head] of Object.entries(chains ?? {})) this.changeChains[c] = Math.max(this.changeChains[c] ?? 0, head);
  }
}

/** IpamDriver handlers (ipam.ts). */
export interface IpamDeps {
  controller: ControllerClient;
  store: LocalStore;
  memory: Pick<DriverMemory, 'recentPools' | 'unreservedGateways' | 'poolRequestedAt' | 'namedAddresses'>;
  /** Addresses released a moment ago, for the container's restart (address-holds.ts; absent: released at once). */
  holds?: AddressHolds;
  /** Which container an address of a sticky pool is for (sticky.ts; absent: no pool is sticky). */
  sticky?: StickyIdentities;
}

/** CreateEndpoint / DeleteEndpoint / EndpointOperInfo (endpoint.ts). */
export interface EndpointDeps {
  controller: ControllerClient;
  store: LocalStore;
  lock: KeyedMutex;
  links: LinkOps;
  /** Names a network in a refusal (Docker's name, else the cluster view's). */
  docker?: Pick<Docker, 'networkName'>;
  clusterNetworkName?: (networkId: string) => string | undefined;
  /** Sticky endpoints get a MAC derived from their identity (sticky.ts). */
  sticky?: StickyIdentities;
}

/** Join / Leave (joinleave.ts). */
export interface JoinDeps {
  store: LocalStore;
  lock: KeyedMutex;
  links: LinkOps;
  docker?: Pick<Docker, 'networkName'>;
  clusterNetworkName?: (networkId: string) => string | undefined;
  /** Announces a joined endpoint's MAC to the network in the background (announce.ts; absent: no announcements). */
  announcer?: Pick<Announcer, 'announce' | 'cancel'>;
}

/** Sending a network's name and definition to the controller (network.ts's defineNetwork). */
export interface DefineDeps {
  controller: ControllerClient;
  memory: Pick<DriverMemory, 'conflicts' | 'define'>;
  log: Log;
}

/** CreateNetwork / DeleteNetwork (network.ts). */
export interface NetworkDeps extends DefineDeps {
  store: LocalStore;
  lock: KeyedMutex;
  links: LinkOps;
  docker: Pick<Docker, 'inspectNetwork' | 'networkName'>;
  memory: Pick<DriverMemory, 'conflicts' | 'define' | 'changeRecorded' | 'networkGone' | 'recentPools' | 'unreservedGateways'>;
  /** Addresses held for a restart: those of a network that goes are released with it. */
  holds?: AddressHolds;
  /** Cluster parent names → this host's interfaces (--parent-map). */
  parentMap?: Readonly<Record<string, string>>;
  /** A network's name as the cluster view knows it (NetworkNamed events), when Docker cannot say. */
  clusterNetworkName?: (networkId: string) => string | undefined;
  /** Called after this host's networks changed (a replica reconcile, routes). */
  onNetworksChanged?: () => void;
}

/**
 * Everything the agent's driver holds (built once in agent.ts): a superset of each handler's dependencies.
 * `conflicts` and `endpointErrors` are DriverMemory's, repeated here for the status report and the replica reconcile.
 */
export interface DriverContext extends NetworkDeps, IpamDeps, EndpointDeps, JoinDeps {
  node: string;
  docker: Docker;
  memory: DriverMemory;
  /** The last error of each endpoint's Docker calls (memory.endpointErrors). */
  readonly endpointErrors: Map<string, EndpointError>;
  /** Docker networks the controller refused (memory.conflicts). */
  readonly conflicts: Map<string, string>;
  /** The name Docker knows this plugin by (--driver-name): `underlay` for the socket plugin, `underlay/underlay:VERSION` as a managed plugin. */
  driverName?: string;
}

/** The agent's DriverContext from its parts. */
export function driverContext(parts: Omit<DriverContext, 'memory' | 'endpointErrors' | 'conflicts'> & { memory?: DriverMemory }): DriverContext {
  const memory = parts.memory ?? new DriverMemory();
  return {
    ...parts,
    memory,
    endpointErrors: memory.endpointErrors,
    conflicts: memory.conflicts,
  };
}
