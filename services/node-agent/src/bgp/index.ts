/**
 * BGP to the physical network through a local gobgpd 3.10 (its gRPC API on loopback or a unix socket).
 *
 * The controller's event stream stays the source of truth: this module only mirrors it. It starts gobgpd's
 * global config (or adopts one already started), adds the configured peers, and advertises every block this
 * node owns with the host address as next hop, marked with the large community `<AS>:201:1`. Each pass
 * (on block events, every 30 s, and when gobgpd comes back) compares that with the marked local paths
 * gobgpd holds and adds or withdraws only the difference, so a restarted agent neither duplicates nor
 * re-advertises anything, and blocks released while the agent was down are withdrawn. With installLearned it
 * watches gobgpd's best paths and hands the peers' routes to onLearned. Errors (gobgpd not up yet, restarting)
 * are logged and retried with backoff; nothing here throws after startBgp has returned.
 * The advertisement loop (coalesced kicks, one pass at a time, the 30 s resync, backoff while gobgpd is away, stop)
 * is the shared ReconcileRunner; re-opening the best-path watch waits a shared Backoff's delay.
 */
import { GobgpClient, ROOT_CONTEXT, ReconcileRunner, SpanKind, attr, linkTo, sleep, spanNames, traceMethods, tracingOn, withSpan, type BgpPath, type BgpWatch, type Link } from '@underlay/adapters';
import { Backoff, eventTraceparent, tryParseAddr, type BackoffPolicy, type ClusterEvent, type DesiredRoute } from '@underlay/core';
import type { ClusterView } from '../cluster-view.js';
import { applyBestPaths, desiredAdvertisements, learnedRoutes, planAdvertisements, sameRoutes } from './plan.js';

export { applyBestPaths, desiredAdvertisements, isUnderlayPath, learnedRoutes, planAdvertisements, underlayMark } from './plan.js';

export interface BgpDeps {
  node: string;
  view: ClusterView;
  /** This host's address: next hop of what it advertises, and default router id. */
  address: string;
  asn: number;
  routerId?: string;
  peers: { address: string; asn: number }[];
  /** gobgpd gRPC target. */
  api: string;
  installLearned: boolean;
  /** Called with the full set of learned routes (dst via next hop; dev may be '' for "let the kernel pick") whenever it changes. */
  onLearned(routes: DesiredRoute[]): void;
  logger: (m: string) => void;
  /** For tests. */
  client?: GobgpClient;
  /** Metrics: the reconcile runner's observer. */
  observe?: (loop: string, ok: boolean) => void;
}

export interface BgpService {
  stop(): Promise<void>;
  advertised(): string[];
  learned(): DesiredRoute[];
  /** The configured peers' sessions as gobgpd reports them now (metrics: underlay_bgp_session_up). */
  sessions(): Promise<{ peer: string; up: boolean }[]>;
}

/** Periodic pass (also repairs a gobgpd that restarted while its watch stream looked fine). */
const RESYNC_MS = 30_000;
/** Between tries while gobgpd does not answer (the advertisement pass and the best-path watch). */
const RETRY: BackoffPolicy = { minMs: 500, maxMs: 5_000 };
/** Learned-route changes arriving together are handed over once. */
const LEARN_SETTLE_MS = 20;
/** How long to wait for the best-path replay after END_OF_INIT (gobgpd sends none before StartBgp). */
const SNAPSHOT_WAIT_MS = 1_000;
/** Peers added by underlay carry this description, so a peer removed from the configuration is deleted. */
export const PEER_DESCRIPTION = 'underlay';
/** Seconds between gobgpd's connection attempts to a peer (its default is 120). */
const PEER_CONNECT_RETRY_S = 5;
const BLOCK_EVENTS = new Set<ClusterEvent['type']>(['BlockClaimed', 'BlockReleased', 'PoolCreated', 'PoolDeleted']);

/** `ADDRESS:ASN` (the agent's --bgp-peers entries; the last colon separates the AS, so IPv6 works unbracketed too). */
export function parseBgpPeer(s: string): { address: string; asn: number } {
  const t = s.trim();
  const i = t.lastIndexOf(':');
  const address = (i > 0 ? t.slice(0, i) : '').replace(/^\[(.*)\]$/, '$1');
  const asn = i > 0 ? Number(t.slice(i + 1)) : NaN;
  if (!tryParseAddr(address) || !Number.isInteger(asn) || asn < 1 || asn > 0xffffffff) {
    throw new Error(`BGP peer ${JSON.stringify(s)}: expected ADDRESS:ASN, for example 198.51.100.254:65000`);
  }
  return { address, asn };
}

/**
 * Starts mirroring this node's blocks into gobgpd. Rejects only for configuration errors (an API address
 * that is not loopback or a unix socket, an AS number or router id gobgpd cannot take); gobgpd itself may
 * come up later.
 */
export async function startBgp(deps: BgpDeps): Promise<BgpService> {
  if (!Number.isInteger(deps.asn) || deps.asn < 1 || deps.asn > 0xffffffff) throw new Error(`BGP: invalid AS number ${deps.asn}`);
  const addr = tryParseAddr(deps.address);
  if (!addr) throw new Error(`BGP: the host address ${JSON.stringify(deps.address)} is not an IP address`);
  const routerId = deps.routerId ?? deps.address;
  const rid = tryParseAddr(routerId);
  if (!rid || rid.family !== 4) {
    throw new Error(
      deps.routerId
        ? `BGP: the router id must be an IPv4 address (got ${JSON.stringify(routerId)})`
        : `BGP: the host address ${deps.address} is IPv6; give an IPv4 router id (--bgp-router-id)`,
    );
  }
  for (const p of deps.peers) {
    if (!tryParseAddr(p.address)) throw new Error(`BGP: peer ${JSON.stringify(p.address)} is not an IP address`);
    if (!Number.isInteger(p.asn) || p.asn < 1 || p.asn > 0xffffffff) throw new Error(`BGP: peer ${p.address} has an invalid AS number ${p.asn}`);
  }
  // Tracing on: gobgp calls made under an active span are its children (`bgp <op>`).
  const client = traceMethods(deps.client ?? GobgpClient.connect(deps.api), spanNames('bgp', ['getBgp', 'startBgp', 'stopBgp', 'addPeer', 'deletePeer', 'listPeers', 'addPath', 'deletePath', 'listPath'] as const));
  const svc = new Bgp(deps, client, !deps.client, routerId);
  svc.start();
  return svc;
}

class Bgp implements BgpService {
  private stopped = false;
  private readonly abort = new AbortController();
  private readonly runner: ReconcileRunner;
  private lastError = '';
  private adopted?: string;
  private skippedKey = '';
  private advertisedNow: string[] = [];
  private unsubscribe?: () => void;
  private readonly noted = new Set<string>();
  /** Tracing on: the traces of the block events the next pass advertises (its `apply event` span links them). */
  private eventLinks: Link[] = [];

  private watch?: BgpWatch;
  private readonly watchBackoff = new Backoff(RETRY);
  private watchError = '';
  private learnedTable = new Map<string, BgpPath>();
  private haveSnapshot = false;
  private emitTimer?: NodeJS.Timeout;
  private learnedNow: DesiredRoute[] = [];
  private emitted = false;

  constructor(
    private readonly deps: BgpDeps,
    private readonly client: GobgpClient,
    private readonly ownClient: boolean,
    private readonly routerId: string,
  ) {
    this.runner = new ReconcileRunner({
      name: 'bgp',
      resyncMs: RESYNC_MS,
      backoff: RETRY,
      reconcile: () => this.reconcile(),
      ...(deps.observe ? { observe: deps.observe } : {}),
      onError: (e) => {
        const msg = (e as Error).message;
        if (msg !== this.lastError) this.log(`${msg} (retrying)`);
        this.lastError = msg;
      },
      onRecovered: () => {
        this.log(`gobgpd at ${this.client.target} answers again`);
        this.lastError = '';
      },
    });
  }

  private log(m: string): void {
    try {
      this.deps.logger(`bgp: ${m}`);
    } catch {
      // a logger must not stop BGP
    }
  }

  /** Logs a message once (a condition every pass would repeat). */
  private note(m: string): void {
    if (this.noted.has(m)) return;
    this.noted.add(m);
    this.log(m);
  }

  start(): void {
    this.unsubscribe = this.deps.view.onChange((events, _state, info) => {
      // Until the view has caught up a pass only sets up the session (start() and ready() kick for that). A resync
      // (the view started again from a snapshot) carries no events: a full pass.
      if (!this.deps.view.isReady || (!info?.resync && !events.some((e) => BLOCK_EVENTS.has(e.type)))) return;
      if (tracingOn()) {
        for (const e of events) {
          if (!BLOCK_EVENTS.has(e.type) || !e.traceId || this.eventLinks.length >= 32) continue;
          const link = linkTo(eventTraceparent(e.traceId, e.seq), { [attr.seq]: e.seq });
          if (link) this.eventLinks.push(link);
        }
      }
      this.kick();
      this.scheduleEmit(); // pools changed: the overlap filter of learned routes may too
    });
    void this.deps.view.ready().then(() => {
      this.kick();
      this.scheduleEmit();
    });
    this.runner.start();
    if (this.deps.installLearned) this.startWatch();
  }

  // ----- advertisements -----------------------------------------------------------------------

  /** A pass now, or right after the running one (a kick while backing off runs it at once). */
  private kick(): void {
    this.runner.trigger();
  }

  private async reconcile(): Promise<void> {
    const { deps, client } = this;
    const g = await client.getBgp();
    if (!g) {
      await client.startBgp({ asn: deps.asn, routerId: this.routerId, listenPort: -1 });
      this.adopted = `${deps.asn}/${this.routerId}`;
      this.log(`started gobgpd at ${client.target}: AS ${deps.asn}, router id ${this.routerId}, no listener (it dials its peers)`);
    } else if (this.adopted !== `${g.asn}/${g.routerId}`) {
      this.adopted = `${g.asn}/${g.routerId}`;
      this.log(
        g.asn === deps.asn
          ? `gobgpd at ${client.target} already runs AS ${g.asn}, router id ${g.routerId}: adopted`
          : `gobgpd at ${client.target} already runs AS ${g.asn} (configured: ${deps.asn}), router id ${g.routerId}: adopted as is`,
      );
    }
    await this.reconcilePeers();
    if (!deps.view.isReady) return; // advertising a partial view would withdraw blocks the node still owns
    // The links of the events this pass's view reflects: taken with the state read (no await between), so an event
    // applied while this pass waits on gobgpd keeps its link for the pass its kick runs.
    const links = this.eventLinks;
    this.eventLinks = [];
    const wanted = desiredAdvertisements(deps.view.state, deps.node, deps.address, deps.asn);
    const key = wanted.skipped.join(',');
    if (key !== this.skippedKey) {
      this.skippedKey = key;
      if (key) this.log(`not advertised (no next hop of their family; the host address is ${deps.address}): ${wanted.skipped.join(', ')}`);
    }
    const held = [...(await client.listPath({ family: 'ipv4' })), ...(await client.listPath({ family: 'ipv6' }))];
    const plan = planAdvertisements(wanted.routes, held);
    const advertise = async (): Promise<void> => {
      for (const r of plan.add) {
        await client.addPath(r);
        this.log(`advertising ${r.prefix} via ${r.nextHop}`);
      }
      for (const prefix of plan.withdraw) {
        await client.deletePath({ prefix });
        this.log(`withdrew ${prefix}`);
      }
    };
    // Tracing on: changes that follow block events are an `apply event` span (CONSUMER) linked to their traces.
    if (links.length > 0 && tracingOn() && plan.add.length + plan.withdraw.length > 0) {
      await withSpan('apply event', { kind: SpanKind.CONSUMER, parent: ROOT_CONTEXT, links, attributes: { [attr.node]: deps.node, [attr.seq]: deps.view.state.seq } }, advertise);
    } else {
      await advertise();
    }
    this.advertisedNow = [...wanted.routes.keys()];
  }

  private async reconcilePeers(): Promise<void> {
    const { deps, client } = this;
    const have = await client.listPeers();
    const same = (a: string, b: string) => {
      const x = tryParseAddr(a);
      const y = tryParseAddr(b);
      return !!x && !!y && x.family === y.family && x.value === y.value;
    };
    for (const p of deps.peers) {
      const cur = have.find((h) => same(h.address, p.address));
      if (cur && cur.asn === p.asn) continue;
      if (cur) {
        if (cur.description !== PEER_DESCRIPTION) {
          this.note(`peer ${p.address} is configured in gobgpd with AS ${cur.asn} (not ${p.asn}) and was not added by underlay; left as is`);
          continue;
        }
        await client.deletePeer(cur.address);
        this.log(`peer ${p.address}: AS changed from ${cur.asn} to ${p.asn}`);
      }
      await client.addPeer({ address: p.address, asn: p.asn, description: PEER_DESCRIPTION, connectRetry: PEER_CONNECT_RETRY_S });
      this.log(`added peer ${p.address} AS ${p.asn}`);
    }
    for (const h of have) {
      if (h.description === PEER_DESCRIPTION && !deps.peers.some((p) => same(p.address, h.address))) {
        await client.deletePeer(h.address);
        this.log(`deleted peer ${h.address} (no longer configured)`);
      }
    }
  }

  // ----- learned routes -------------------------------------------------------------------------

  private startWatch(): void {
    if (this.stopped) return;
    let snapshotPending = false;
    let snapshotTimer: NodeJS.Timeout | undefined;
    const takeSnapshot = (paths: readonly BgpPath[]) => {
      snapshotPending = false;
      if (snapshotTimer) clearTimeout(snapshotTimer);
      const t = new Map<string, BgpPath>();
      applyBestPaths(t, paths);
      this.learnedTable = t;
      this.haveSnapshot = true;
      this.scheduleEmit();
    };
    this.watch = this.client.watch({
      onInit: () => {
        snapshotPending = true;
        // gobgpd replays best paths only once BGP is started; without a replay the table is empty. (A single wait
        // for one reply, not a retry loop.)
        snapshotTimer = setTimeout(() => snapshotPending && takeSnapshot([]), SNAPSHOT_WAIT_MS);
        snapshotTimer.unref();
      },
      onPaths: (paths) => {
        if (this.watchBackoff.attempts > 0) this.log('watching best paths again');
        this.watchBackoff.reset();
        this.watchError = '';
        if (snapshotPending) takeSnapshot(paths);
        else {
          applyBestPaths(this.learnedTable, paths);
          this.scheduleEmit();
        }
      },
      onEnd: (err) => {
        if (snapshotTimer) clearTimeout(snapshotTimer);
        this.watch = undefined;
        if (this.stopped) return;
        const msg = err?.message ?? 'watch ended';
        if (msg !== this.watchError) this.log(`best-path watch: ${msg} (retrying; learned routes kept until gobgpd answers)`);
        this.watchError = msg;
        // Re-open after the shared backoff's delay (reset by the first paths the new watch delivers).
        void sleep(this.watchBackoff.next(), this.abort.signal).then(() => this.startWatch());
        this.kick(); // gobgpd may have restarted without its config and paths
      },
    });
  }

  private scheduleEmit(): void {
    if (this.stopped || !this.deps.installLearned || this.emitTimer) return;
    // A debounce (changes arriving together are handed over once), not a retry loop.
    this.emitTimer = setTimeout(() => {
      this.emitTimer = undefined;
      this.emitLearned();
    }, LEARN_SETTLE_MS);
    this.emitTimer.unref();
  }

  private emitLearned(): void {
    // Both the replay and the cluster's pools are needed: without the pools, other nodes' blocks (learned
    // through the top-of-rack) would be handed over as external routes.
    if (this.stopped || !this.haveSnapshot || !this.deps.view.isReady) return;
    const routes = learnedRoutes(this.learnedTable, this.deps.view.state, this.deps.address);
    if (this.emitted && sameRoutes(routes, this.learnedNow)) return;
    this.learnedNow = routes;
    this.emitted = true;
    try {
      this.deps.onLearned(routes.map((r) => ({ ...r })));
    } catch (e) {
      this.log(`learned routes handler failed: ${(e as Error).message}`);
    }
  }

  // ----- service --------------------------------------------------------------------------------

  advertised(): string[] {
    return [...this.advertisedNow];
  }

  async sessions(): Promise<{ peer: string; up: boolean }[]> {
    const have = await this.client.listPeers();
    return this.deps.peers.map((p) => {
      const want = tryParseAddr(p.address);
      const cur = have.find((h) => {
        const a = tryParseAddr(h.address);
        return !!a && !!want && a.family === want.family && a.value === want.value;
      });
      return { peer: p.address, up: cur?.state === 'ESTABLISHED' };
    });
  }

  learned(): DesiredRoute[] {
    return this.learnedNow.map((r) => ({ ...r }));
  }

  /** Stops mirroring. Advertised paths stay in gobgpd (a restarting agent must not flap its blocks). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.unsubscribe?.();
    this.abort.abort();
    if (this.emitTimer) clearTimeout(this.emitTimer);
    this.watch?.cancel();
    await this.runner.stop();
    if (this.ownClient) this.client.close();
  }
}
