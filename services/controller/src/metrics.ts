/**
 * The controller's metrics (docs/ARCHITECTURE.md, "Metrics and health"). The IPAM gauges, the log's head, the
 * stream's published seq, the leader gauge and the nodes by state are computed when Prometheus scrapes (collect
 * callbacks reading the ClusterState and the controller), so they are always exact; counters and histograms are
 * fed by one hook at each site (serveRpc's observer, the group committer's transaction hook, the collector, the
 * HTTP dispatcher).
 */
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, createMetricsRegistry, rpcMetrics, type Registry, type RpcObserver } from '@underlay/adapters';
import { poolSize, type ClusterState } from '@underlay/core';

/** What the scrape-time gauges read from the controller. */
export interface ControllerMetricsSource {
  state(): ClusterState;
  /** 1 while this controller is the serving leader. */
  leader(): boolean;
  /** Last seq committed (the leader's committer, or the state a standby folded). */
  headSeq(): number;
  /** Last seq handed to JetStream (0 on a standby). */
  publishedSeq(): number;
  /** Nodes by lease state. */
  nodes(): { ready: number; notReady: number };
  /** Allocations the collector saw unused once, by pool. */
  leakCandidates(): ReadonlyMap<string, number>;
}

/** 2^53: IPv6 pool sizes are capped here (a gauge is a float64). */
const SIZE_CAP = 2n ** 53n;

interface IpamCounts {
  size: Map<string, number>;
  /** pool → node → count */
  inUse: Map<string, Map<string, number>>;
  borrowed: Map<string, Map<string, number>>;
  blocks: Map<string, Map<string, number>>;
}

const bump = (m: Map<string, Map<string, number>>, pool: string, node: string) => {
  let per = m.get(pool);
  if (!per) m.set(pool, (per = new Map()));
  per.set(node, (per.get(node) ?? 0) + 1);
};

/** Per pool: its usable size (as ipam usage counts it), and per node the addresses held, those borrowed, and the blocks owned. */
export function ipamCounts(state: ClusterState): IpamCounts {
  const out: IpamCounts = { size: new Map(), inUse: new Map(), borrowed: new Map(), blocks: new Map() };
  for (const p of state.pools.values()) {
    const size = poolSize(p);
    out.size.set(p.poolId, Number(size > SIZE_CAP ? SIZE_CAP : size));
    for (const b of p.blocks.values()) bump(out.blocks, p.poolId, b.node);
  }
  for (const p of state.pools.values()) {
    for (const [address, a] of p.allocs) {
      bump(out.inUse, p.poolId, a.node);
      // Blocks are prefixes of the pool: an address's block starts at the address less its offset in a block.
      const owner = p.blocks.get(address - (address % p.blockSizeValue))?.node;
      if (owner !== undefined && owner !== a.node) bump(out.borrowed, p.poolId, a.node);
    }
  }
  // Borrowed is a series (at 0) for every pool and node that holds addresses or blocks: a panel or alert on it has
  // data before the first borrowing, and a drop back to none shows as 0 rather than a gap.
  for (const src of [out.inUse, out.blocks]) {
    for (const [pool, per] of src) {
      for (const node of per.keys()) {
        let b = out.borrowed.get(pool);
        if (!b) out.borrowed.set(pool, (b = new Map()));
        if (!b.has(node)) b.set(node, 0);
      }
    }
  }
  return out;
}

export class ControllerMetrics {
  readonly registry: Registry;
  /** serveRpc's observer (underlay_rpc_requests_total, underlay_rpc_request_duration_seconds). */
  readonly rpc: RpcObserver;
  private readonly commitBatch: Histogram;
  private readonly etcdTxn: Histogram;
  private readonly commitFailures: Counter;
  private readonly leaksReclaimed: Counter;
  private readonly electionsWon: Counter;
  private readonly httpTotal: Counter;
  private readonly httpSeconds: Histogram;
  /** The counts of the last scrape's state (every IPAM gauge of one scrape reads one computation). */
  private cached?: { state: ClusterState; seq: number; counts: IpamCounts };

  constructor(src: ControllerMetricsSource, registry: Registry = createMetricsRegistry()) {
    this.registry = registry;
    const registers = [registry];
    this.rpc = rpcMetrics(registry, 'server');
    const counts = () => {
      const state = src.state();
      if (this.cached?.state !== state || this.cached.seq !== state.seq) this.cached = { state, seq: state.seq, counts: ipamCounts(state) };
      return this.cached.counts;
    };
    const perNode = (name: string, help: string, pick: (c: IpamCounts) => Map<string, Map<string, number>>) =>
      new Gauge({
        name,
        help,
        labelNames: ['pool', 'node'],
        registers,
        collect() {
          this.reset();
          for (const [pool, per] of pick(counts())) for (const [node, n] of per) this.set({ pool, node }, n);
        },
      });
    new Gauge({
      name: 'underlay_ipam_pool_size_addresses',
      help: 'Usable addresses in the pool (capped at 2^53 for IPv6)',
      labelNames: ['pool'],
      registers,
      collect() {
        this.reset();
        for (const [pool, n] of counts().size) this.set({ pool }, n);
      },
    });
    perNode('underlay_ipam_addresses_in_use', 'Addresses of the pool allocated to the node', (c) => c.inUse);
    perNode('underlay_ipam_addresses_borrowed', 'Addresses allocated to the node in a block another node owns', (c) => c.borrowed);
    perNode('underlay_ipam_blocks', 'Blocks of the pool the node owns', (c) => c.blocks);
    new Gauge({
      name: 'underlay_ipam_leak_candidates',
      help: 'Allocations the collector saw unused once (reclaimed on a second sighting)',
      labelNames: ['pool'],
      registers,
      collect() {
        this.reset();
        // Every pool has a series (0 when the collector holds no candidate), so the leak panel and alert see data.
        for (const pool of counts().size.keys()) this.set({ pool }, 0);
        for (const [pool, n] of src.leakCandidates()) this.set({ pool }, n);
      },
    });
    this.leaksReclaimed = new Counter({
      name: 'underlay_ipam_leaks_reclaimed_total',
      help: 'Allocations the collector reclaimed',
      labelNames: ['pool'],
      registers,
      // Every pool's counter exists from its first scrape (at 0), so increase() and the leak alert have a series.
      collect() {
        for (const pool of counts().size.keys()) this.inc({ pool }, 0);
      },
    });
    this.commitBatch = new Histogram({ name: 'underlay_commit_batch_events', help: 'Events per group-commit transaction', buckets: [1, 2, 4, 8, 16, 32, 64, 127], registers });
    this.etcdTxn = new Histogram({ name: 'underlay_etcd_txn_duration_seconds', help: 'Latency of the etcd transaction appending a group of events', buckets: LATENCY_BUCKETS, registers });
    this.commitFailures = new Counter({ name: 'underlay_commit_failures_total', help: 'Failed group-commit transactions', registers });
    new Gauge({ name: 'underlay_event_log_head_seq', help: 'Last committed event seq', registers, collect() { this.set(src.headSeq()); } });
    new Gauge({ name: 'underlay_jetstream_published_seq', help: 'Last event seq published to JetStream', registers, collect() { this.set(src.publishedSeq()); } });
    new Gauge({
      name: 'underlay_jetstream_publish_lag_events',
      help: 'Committed events not yet published to JetStream (head - published; 0 on a standby)',
      registers,
      collect() {
        this.set(src.leader() ? Math.max(0, src.headSeq() - src.publishedSeq()) : 0);
      },
    });
    new Gauge({ name: 'underlay_leader', help: '1 when this controller is the serving leader', registers, collect() { this.set(src.leader() ? 1 : 0); } });
    this.electionsWon = new Counter({ name: 'underlay_leader_elections_won_total', help: 'Times this controller became the leader', registers });
    new Gauge({
      name: 'underlay_nodes',
      help: 'Nodes by lease state',
      labelNames: ['state'],
      registers,
      collect() {
        const n = src.nodes();
        this.set({ state: 'Ready' }, n.ready);
        this.set({ state: 'NotReady' }, n.notReady);
      },
    });
    this.httpTotal = new Counter({ name: 'underlay_http_requests_total', help: 'HTTP API requests, by route pattern and status code', labelNames: ['route', 'code'], registers });
    this.httpSeconds = new Histogram({ name: 'underlay_http_request_duration_seconds', help: 'HTTP API requests: time to the end of the answer', labelNames: ['route'], buckets: LATENCY_BUCKETS, registers });
  }

  /** One etcd transaction of the group committer: its events, duration, and whether it committed. */
  transaction(events: number, seconds: number, ok: boolean): void {
    this.etcdTxn.observe(seconds);
    if (ok) this.commitBatch.observe(events);
    else this.commitFailures.inc();
  }

  /** Allocations the collector reclaimed, by pool. */
  reclaimed(pools: readonly string[]): void {
    for (const pool of pools) this.leaksReclaimed.inc({ pool });
  }

  electionWon(): void {
    this.electionsWon.inc();
  }

  /** One HTTP request: its route pattern (`unmatched` when none), status and duration. */
  http(route: string, code: number, seconds: number): void {
    this.httpTotal.inc({ route, code: String(code) });
    this.httpSeconds.observe({ route }, seconds);
  }
}
