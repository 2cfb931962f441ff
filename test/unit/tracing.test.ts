/**
 * libs/adapters/src/telemetry/tracing.ts with the real OpenTelemetry Node SDK (spans kept in memory: Jest cannot run
 * the OTLP exporters, which load `http` by a dynamic import; the OTLP/JSON export is tested with real processes in
 * test/integration/tracing.test.ts): off without an exporter endpoint (nothing started, functions run as they
 * are); on, the group commit's span is a child of the first request it carries and links every one; child spans of
 * wrapped objects appear only under an active span; the resource names the service and the instance.
 */
import { Writable } from 'node:stream';
import { ROOT_CONTEXT, SpanKind, createServiceLog, startTracing, traceMethods, traceparentOf, tracingOffReason, tracingOn, withSpan, withSpanSync, type Tracing } from '@underlay/adapters';
import type { ClusterEvent } from '@underlay/core';
import type { EtcdEventLog } from '@underlay/adapters';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { SpanKind as Kind, trace } from '@opentelemetry/api';
import { PluginTraces } from '../../services/node-agent/src/plugin-traces';
import { GroupCommitter } from '../../services/controller/src/committer';
import { MemoryRouteOps, startRoutes } from '../../services/node-agent/src/routes/index';
import type { ClusterView } from '../../services/node-agent/src/cluster-view';
import type { NetworkRecord } from '../../services/node-agent/src/driver/store';
import { decideNodeHello, decideRequestAddress, decideRequestPool, isTraceId, newTraceparent, traceIdOf } from '@underlay/core';
import { engineWithClock } from './support';

const ev = (seq: number) => ({ seq, id: String(seq), time: '2026-01-01T00:00:00Z', actor: 'x', type: 'NodeHello', data: {} }) as unknown as ClusterEvent;

/** Hosts a and b with a /28-block pool each holds, and a view of the engine's state whose listeners the test calls. */
function routesCluster() {
  const t = engineWithClock();
  t.run((st) => decideNodeHello(st, { node: 'a', address: '198.51.100.1' }), 'node:a');
  t.run((st) => decideNodeHello(st, { node: 'b', address: '198.51.100.2' }), 'node:b');
  const poolOf = (node: string) => t.run((st) => decideRequestPool(st, { node, space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: { block_size: '28' }, v6: false }), `node:${node}`).poolId;
  const id = poolOf('a');
  poolOf('b');
  const listeners = new Set<(evs: readonly ClusterEvent[]) => void>();
  const view = { get state() { return t.engine.state; }, get seq() { return t.engine.state.seq; }, onChange: (l: (evs: readonly ClusterEvent[]) => void) => (listeners.add(l), () => listeners.delete(l)), ready: () => Promise.resolve() };
  return { t, id, listeners, view };
}

describe('tracing off', () => {
  it('stays off without an exporter endpoint, when disabled, or with the none exporter', () => {
    expect(tracingOffReason({})).toMatch(/OTEL_EXPORTER_OTLP_ENDPOINT/);
    expect(tracingOffReason({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1', OTEL_SDK_DISABLED: 'true' })).toMatch(/DISABLED/);
    expect(tracingOffReason({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1', OTEL_TRACES_EXPORTER: 'none' })).toMatch(/none/);
    expect(tracingOffReason({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:1/v1/traces' })).toBeUndefined();
    expect(tracingOffReason({ OTEL_TRACES_EXPORTER: 'console' })).toBeUndefined();
    expect(startTracing({ service: 'underlay-agent', instance: 'h1', env: {} })).toBeUndefined();
    expect(tracingOn()).toBe(false);
  });

  it('runs functions as they are, and wraps nothing', async () => {
    const obj = { async f(x: number) { return x + 1; } };
    expect(traceMethods(obj, { f: 'f' })).toBe(obj);
    await expect(withSpan('x', {}, async (span) => {
      expect(span.isRecording()).toBe(false);
      return 7;
    })).resolves.toBe(7);
    expect(withSpanSync('y', {}, () => 8)).toBe(8);
  });
});

describe('tracing on (one SDK for this file, spans in memory)', () => {
  const exporter = new InMemorySpanExporter();
  const processor = new SimpleSpanProcessor(exporter);
  let tracing: Tracing | undefined;
  const saved = { ...process.env };
  const spans = async (): Promise<ReadableSpan[]> => {
    await processor.forceFlush();
    return exporter.getFinishedSpans();
  };

  beforeAll(() => {
    delete process.env.OTEL_SERVICE_NAME;
    tracing = startTracing({ service: 'underlay-controller', instance: 'c1', env: {}, spanProcessors: [processor] });
  });
  afterAll(async () => {
    await tracing?.shutdown();
    process.env = saved;
  });

  it('links a group commit to every request it carries, as a child of the first', async () => {
    expect(tracingOn()).toBe(true);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const appended: number[][] = [];
    const log = {
      async append(events: ClusterEvent[]) {
        appended.push(events.map((e) => e.seq));
        if (appended.length === 1) await gate; // the first transaction waits: the next two requests share one
      },
    } as unknown as EtcdEventLog;
    const committer = new GroupCommitter(log, 0, { onCommitted: () => {}, onFailed: () => {} });
    const request = (name: string, seq: number) =>
      withSpan(name, { kind: SpanKind.SERVER, parent: ROOT_CONTEXT }, async (span) => {
        await committer.commit([ev(seq)]);
        return span.spanContext();
      });
    const a = request('process a', 1);
    await new Promise((r) => setImmediate(r));
    const b = request('process b', 2);
    const c = request('process c', 3);
    await new Promise((r) => setImmediate(r));
    release();
    const [sa, sb, sc] = await Promise.all([a, b, c]);
    expect(appended).toEqual([[1], [2, 3]]);
    const all = await spans();
    const commits = all.filter((s) => s.name === 'commit');
    expect(commits).toHaveLength(2);
    const second = commits.find((s) => s.attributes['underlay.events'] === 2)!;
    expect(second.spanContext().traceId).toBe(sb.traceId);
    expect(second.parentSpanContext?.spanId).toBe(sb.spanId);
    expect(second.links.map((l) => l.context.spanId).sort()).toEqual([sb.spanId, sc.spanId].sort());
    expect(second.attributes['underlay.seq']).toBe(3);
    const first = commits.find((s) => s.attributes['underlay.events'] === 1)!;
    expect(first.spanContext().traceId).toBe(sa.traceId);
    const proc = all.find((s) => s.name === 'process a')!;
    expect(proc.kind).toBe(Kind.SERVER);
    expect(proc.resource.attributes['service.name']).toBe('underlay-controller');
    expect(proc.resource.attributes['service.instance.id']).toBe('c1');
    expect(traceparentOf(sa)).toBe(`00-${sa.traceId}-${sa.spanId}-01`);
  });

  it('makes child spans of wrapped objects only under an active span, named and described', async () => {
    exporter.reset();
    const ops = {
      calls: 0,
      async createMacvlan(o: { name: string }) {
        this.calls++;
        return o.name;
      },
    };
    const traced = traceMethods(ops, { createMacvlan: 'netlink createMacvlan' }, (args) => ({ 'network.interface.name': (args[0] as { name: string }).name }));
    await traced.createMacvlan({ name: 'background' }); // no active span: no trace of its own
    await withSpan('docker CreateEndpoint', { kind: SpanKind.SERVER }, () => traced.createMacvlan({ name: 'ul-1' }));
    await expect(withSpan('fails', {}, async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    expect(ops.calls).toBe(2);
    const all = await spans();
    const link = all.filter((s) => s.name === 'netlink createMacvlan');
    expect(link).toHaveLength(1);
    const parent = all.find((s) => s.name === 'docker CreateEndpoint')!;
    expect(link[0]!.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    expect(link[0]!.attributes['network.interface.name']).toBe('ul-1');
    expect(all.find((s) => s.name === 'fails')!.status.code).toBe(2);
  });

  it('names the active span in service log lines (trace_id, span_id), and nothing outside spans', async () => {
    const lines: string[] = [];
    const stream = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(chunk.toString()), done()) });
    const logger = createServiceLog({ service: 'underlay-agent', instance: 'h1', who: 'agent h1', format: 'json', stream });
    logger('outside');
    const sc = await withSpan('docker Join', { kind: SpanKind.SERVER }, async (span) => (logger('inside'), span.spanContext()));
    const [outside, inside] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(outside).toMatchObject({ msg: 'outside', level: 'info', service: 'underlay-agent', instance: 'h1' });
    expect(outside).not.toHaveProperty('trace_id');
    expect(inside).toMatchObject({ msg: 'inside', trace_id: sc.traceId, span_id: sc.spanId });
  });

  it('makes an apply event span (CONSUMER) linked to the event\'s trace when an event adds a route, with route add under it', async () => {
    exporter.reset();
    let macs = 0;
    const { t, id, listeners, view } = routesCluster();
    let sent = t.log.length;
    const ops = new MemoryRouteOps();
    const net = { id: 'n1', type: 'ipvlan', parent: 'eth1', createdParent: false, macvlanMode: '', ipvlanMode: 'l3', ipvlanFlag: 'bridge', internal: false, ipv4: [], ipv6: [], poolIds: [id] } as unknown as NetworkRecord;
    const svc = await startRoutes({ node: 'a', view: view as unknown as ClusterView, localNetworks: () => [net], reconcileMs: 60_000, logger: () => {}, ops: traceMethods(ops, { addRoute: 'route add', deleteRoute: 'route del' }) });
    try {
      await new Promise((r) => setTimeout(r, 20)); // the first pass: nothing to do
      const traceId = 'abcdefabcdefabcdefabcdefabcdef12';
      t.run((st) => decideRequestAddress(st, { node: 'b', poolId: id, address: '', options: { 'com.docker.network.endpoint.macaddress': `02:00:00:00:00:0${++macs}` } }), 'node:b');
      const evs = t.log.slice(sent) as ClusterEvent[];
      sent = t.log.length;
      for (const e of evs) (e as { traceId?: string }).traceId = traceId;
      for (const l of listeners) l(evs);
      const end = Date.now() + 2_000;
      while (!ops.table.has('192.0.2.0/28') && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
      expect(ops.table.has('192.0.2.0/28')).toBe(true);
    } finally {
      await svc.stop();
    }
    const all = await spans();
    const applied = all.find((x) => x.name === 'apply event')!;
    expect(applied.kind).toBe(Kind.CONSUMER);
    expect(applied.parentSpanContext).toBeUndefined();
    expect(applied.links.map((l) => l.context.traceId)).toContain('abcdefabcdefabcdefabcdefabcdef12');
    const add = all.find((x) => x.name === 'route add')!;
    expect(add.parentSpanContext?.spanId).toBe(applied.spanContext().spanId);
    expect(add.attributes).toEqual({}); // the unit test wraps without describing
  });
  it('links the event that came while a pass listed the kernel\'s routes to the apply event span of that pass', async () => {
    // A pass lists the kernel (at start, at each resync) and then reads the view: an event that came during the
    // listing is in what it reads, so the route it adds is that event's. Taking the traces before the listing gave
    // them to the next pass, which found nothing to do: the route was added with no span (a UML lab run saw it).
    exporter.reset();
    const { t, id, listeners, view } = routesCluster();
    const mem = new MemoryRouteOps();
    // The first listing (the start pass's) waits until the test lets it go.
    let listed!: () => void;
    const listing = new Promise<void>((r) => (listed = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let lists = 0;
    const ops = Object.assign(Object.create(mem) as MemoryRouteOps, {
      listRoutes: async (f?: { protocol?: number }) => {
        if (lists++ === 0) {
          listed();
          await gate;
        }
        return mem.listRoutes(f);
      },
    });
    const net = { id: 'n1', type: 'ipvlan', parent: 'eth1', createdParent: false, macvlanMode: '', ipvlanMode: 'l3', ipvlanFlag: 'bridge', internal: false, ipv4: [], ipv6: [], poolIds: [id] } as unknown as NetworkRecord;
    const svc = await startRoutes({ node: 'a', view: view as unknown as ClusterView, localNetworks: () => [net], reconcileMs: 60_000, logger: () => {}, ops: traceMethods(ops, { addRoute: 'route add', deleteRoute: 'route del' }) });
    try {
      await listing;
      const sent = t.log.length;
      t.run((st) => decideRequestAddress(st, { node: 'b', poolId: id, address: '', options: { 'com.docker.network.endpoint.macaddress': '02:00:00:00:01:01' } }), 'node:b');
      const evs = t.log.slice(sent) as ClusterEvent[];
      for (const e of evs) (e as { traceId?: string }).traceId = 'bcdefabcdefabcdefabcdefabcdef123';
      for (const l of listeners) l(evs);
      release();
      const end = Date.now() + 2_000;
      while (!mem.table.has('192.0.2.0/28') && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
      expect(mem.table.has('192.0.2.0/28')).toBe(true);
      await new Promise((r) => setTimeout(r, 50)); // the pass the event asked for (nothing left to do)
    } finally {
      await svc.stop();
    }
    const all = await spans();
    const add = all.find((x) => x.name === 'route add');
    expect(add).toBeDefined();
    const applied = all.find((x) => x.name === 'apply event' && x.spanContext().spanId === add!.parentSpanContext?.spanId);
    expect(applied?.links.map((l) => l.context.traceId)).toContain('bcdefabcdefabcdefabcdefabcdef123');
  });
});

describe('PluginTraces: one container start (and stop) as one trace', () => {
  const sc = (n: number) => ({ traceId: n.toString(16).padStart(32, '0'), spanId: n.toString(16).padStart(16, '0'), traceFlags: 1 });
  const parentOf = (t: PluginTraces, call: string, body: unknown) => trace.getSpanContext(t.parent(call, body));

  it('chains RequestAddress → CreateEndpoint → Join, and Leave → DeleteEndpoint → ReleaseAddress', () => {
    const t = new PluginTraces();
    expect(parentOf(t, 'RequestAddress', { PoolID: 'p', Address: '' })).toBeUndefined();
    t.done('RequestAddress', { PoolID: 'p' }, { Address: '10.0.0.5/24' }, sc(1));
    const create = { NetworkID: 'n', EndpointID: 'e1', Interface: { Address: '10.0.0.5/24' } };
    expect(parentOf(t, 'CreateEndpoint', create)?.spanId).toBe(sc(1).spanId);
    t.done('CreateEndpoint', create, {}, sc(2));
    expect(parentOf(t, 'Join', { NetworkID: 'n', EndpointID: 'e1' })?.spanId).toBe(sc(2).spanId);
    // Taken once: a second Join is a trace of its own.
    expect(parentOf(t, 'Join', { NetworkID: 'n', EndpointID: 'e1' })).toBeUndefined();
    t.done('Leave', { NetworkID: 'n', EndpointID: 'e1' }, {}, sc(3));
    expect(parentOf(t, 'DeleteEndpoint', { NetworkID: 'n', EndpointID: 'e1' })?.spanId).toBe(sc(3).spanId);
    t.done('DeleteEndpoint', { NetworkID: 'n', EndpointID: 'e1' }, {}, sc(4));
    expect(parentOf(t, 'ReleaseAddress', { PoolID: 'p', Address: '10.0.0.5' })?.spanId).toBe(sc(4).spanId);
  });

  it('forgets a call whose follower does not come within a minute', () => {
    let now = 0;
    const t = new PluginTraces(() => now);
    t.done('RequestAddress', {}, { Address: '10.0.0.6/24' }, sc(5));
    now = 61_000;
    expect(parentOf(t, 'CreateEndpoint', { EndpointID: 'e2', Interface: { Address: '10.0.0.6/24' } })).toBeUndefined();
  });
});

describe('newTraceparent (tracing off: the traceparent every request carries)', () => {
  it('makes valid, distinct ids across many refills of its random pool, and keeps a given trace id', () => {
    const seen = new Set<string>();
    const spans = new Set<string>();
    // 8 KiB pool, 24 bytes a traceparent: 2,000 calls refill it several times.
    for (let i = 0; i < 2_000; i++) {
      const tp = newTraceparent();
      expect(tp).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      const tid = traceIdOf(tp)!;
      expect(isTraceId(tid)).toBe(true);
      seen.add(tid);
      spans.add(tp.slice(36, 52));
    }
    expect(seen.size).toBe(2_000);
    expect(spans.size).toBe(2_000);
    const given = 'a'.repeat(31) + 'b';
    const tp = newTraceparent(given);
    expect(traceIdOf(tp)).toBe(given);
    expect(tp.slice(36, 52)).not.toBe(newTraceparent(given).slice(36, 52));
  });
});
