/**
 * The shared metrics and health helpers (libs/adapters/src/telemetry/metrics.ts): readiness checks with a
 * deadline, the exposition's content type chosen by Accept (and the text format unchanged after an OpenMetrics
 * render), trace-id exemplars, the /metrics /healthz /readyz handler; the controller's IPAM counts (borrowed
 * addresses included); the agent's plugin wrapper and netlink error counter.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  Counter,
  OPENMETRICS_CONTENT_TYPE,
  PROMETHEUS_CONTENT_TYPE,
  createMetricsRegistry,
  renderMetrics,
  rpcMetrics,
  runReadiness,
  serveTelemetry,
  traceExemplar,
  wantsOpenMetrics,
} from '@underlay/adapters';
import { UnavailableError, decideRequestAddress, decideRequestPool } from '@underlay/core';
import { AgentMetrics, callName } from '../../services/node-agent/src/metrics';
import { ipamCounts } from '../../services/controller/src/metrics';
import { engineWithLog } from './support';
import { AgentConfig } from '../../services/node-agent/src/config';
import { parseListen } from '../../services/node-agent/src/http';

describe('runReadiness', () => {
  it('is ready when every check is ok, and says which is not', async () => {
    expect(await runReadiness({ a: async () => true, b: async () => ({ ok: true, detail: 'fine' }) }, 1_000)).toEqual({
      ready: true,
      checks: { a: { ok: true }, b: { ok: true, detail: 'fine' } },
    });
    const r = await runReadiness({ a: async () => true, b: async () => ({ ok: false, detail: 'down' }), c: async () => { throw new UnavailableError('etcd is away'); } }, 1_000);
    expect(r).toEqual({ ready: false, checks: { a: { ok: true }, b: { ok: false, detail: 'down' }, c: { ok: false, detail: 'etcd is away' } } });
  });

  it('fails a check that does not answer within the deadline, aborts it, and answers in time', async () => {
    let aborted = false;
    const t0 = Date.now();
    const r = await runReadiness(
      {
        slow: (signal) =>
          new Promise(() => {
            signal.addEventListener('abort', () => (aborted = true));
          }),
        fast: async () => true,
      },
      150,
    );
    const ms = Date.now() - t0;
    expect(r).toEqual({ ready: false, checks: { slow: { ok: false, detail: 'no answer within 150 ms' }, fast: { ok: true } } });
    expect(aborted).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(140);
    expect(ms).toBeLessThan(1_000);
  });
});

describe('exposition', () => {
  it('chooses the format by Accept, and keeps counter names in the text format after an OpenMetrics render', async () => {
    expect(wantsOpenMetrics(undefined)).toBe(false);
    expect(wantsOpenMetrics('text/plain')).toBe(false);
    expect(wantsOpenMetrics('application/openmetrics-text; version=1.0.0,text/plain;q=0.5')).toBe(true);
    const reg = createMetricsRegistry({ defaultMetrics: false });
    const c = new Counter({ name: 'underlay_things_total', help: 'things', registers: [reg] });
    c.inc();
    const text = await renderMetrics(reg);
    expect(text.contentType).toBe(PROMETHEUS_CONTENT_TYPE);
    expect(text.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(text.body).toContain('underlay_things_total 1');
    const om = await renderMetrics(reg, 'application/openmetrics-text');
    expect(om.contentType).toBe(OPENMETRICS_CONTENT_TYPE);
    expect(om.body).toContain('# TYPE underlay_things counter');
    expect(om.body).toContain('underlay_things_total 1');
    expect(om.body.endsWith('# EOF\n')).toBe(true);
    // Concurrent renders of both formats: each keeps its own names.
    const [a, b] = await Promise.all([renderMetrics(reg, 'application/openmetrics-text'), renderMetrics(reg)]);
    expect(a.body).toContain('# TYPE underlay_things counter');
    expect(b.body).toContain('# TYPE underlay_things_total counter');
  });

  it('puts the trace id of a traceparent on histogram buckets as an exemplar (OpenMetrics only)', async () => {
    expect(traceExemplar('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')).toEqual({ trace_id: '0af7651916cd43dd8448eb211c80319c' });
    expect(traceExemplar('00-00000000000000000000000000000000-b7ad6b7169203331-01')).toEqual({});
    expect(traceExemplar('junk')).toEqual({});
    const reg = createMetricsRegistry({ defaultMetrics: false });
    const observe = rpcMetrics(reg, 'server');
    observe('requestAddress', 'ok', 0.003, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    observe('requestAddress', 'exhausted', 0.002);
    const om = (await renderMetrics(reg, 'application/openmetrics-text')).body;
    expect(om).toMatch(/underlay_rpc_request_duration_seconds_bucket\{le="0.005",method="requestAddress"\} 2 # \{trace_id="0af7651916cd43dd8448eb211c80319c"\} 0.003/);
    const text = (await renderMetrics(reg)).body;
    expect(text).toContain('underlay_rpc_requests_total{method="requestAddress",result="ok"} 1');
    expect(text).toContain('underlay_rpc_requests_total{method="requestAddress",result="exhausted"} 1');
    expect(text).not.toContain('trace_id');
  });

  it('drops the default gauges named _total (promtool refuses them) and keeps the process metrics', async () => {
    const body = (await renderMetrics(createMetricsRegistry())).body;
    expect(body).toContain('process_cpu_user_seconds_total');
    expect(body).not.toMatch(/^nodejs_active_handles_total/m);
  });
});

describe('serveTelemetry', () => {
  let server: http.Server;
  let base: string;
  let ready = true;
  beforeAll(async () => {
    const registry = createMetricsRegistry({ defaultMetrics: false });
    new Counter({ name: 'underlay_x_total', help: 'x', registers: [registry] }).inc();
    server = http.createServer((req, res) => void serveTelemetry(req, res, { registry, readiness: async () => ({ ready, checks: { a: { ok: ready } } }) }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('answers /healthz, /readyz (200 or 503), /metrics by Accept, and 404/405 otherwise', async () => {
    const h = await fetch(`${base}/healthz`);
    expect([h.status, await h.json()]).toEqual([200, { status: 'ok' }]);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    ready = false;
    const r = await fetch(`${base}/readyz`);
    expect([r.status, await r.json()]).toEqual([503, { ready: false, checks: { a: { ok: false } } }]);
    const m = await fetch(`${base}/metrics`);
    expect(m.headers.get('content-type')).toBe(PROMETHEUS_CONTENT_TYPE);
    expect(await m.text()).toContain('underlay_x_total 1');
    const om = await fetch(`${base}/metrics`, { headers: { accept: 'application/openmetrics-text' } });
    expect(om.headers.get('content-type')).toBe(OPENMETRICS_CONTENT_TYPE);
    expect((await fetch(`${base}/other`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(405);
  });
});

describe('agent metrics', () => {
  const src = { appliedSeq: () => 5, knownHead: () => 8, routes: () => 3, bgpSessions: async () => [{ peer: '198.51.100.254', up: true }], ready: async () => true };

  it('counts plugin calls by call and result, and netlink failures by operation', async () => {
    expect(callName('/NetworkDriver.RequestAddress')).toBe('RequestAddress');
    expect(callName('/AuthZPlugin.AuthZReq')).toBe('AuthZReq');
    const m = new AgentMetrics(src, createMetricsRegistry({ defaultMetrics: false }));
    const routes = m.plugin({
      '/IpamDriver.RequestAddress': async () => ({ Address: '198.18.0.2/24' }),
      '/NetworkDriver.Join': async () => {
        throw new UnavailableError('no controller');
      },
    });
    await routes['/IpamDriver.RequestAddress']!({});
    await expect(routes['/NetworkDriver.Join']!({})).rejects.toThrow('no controller');
    const ops = m.netlink({
      async addRoute(): Promise<void> {
        throw new Error('EEXIST');
      },
      async listRoutes() {
        return [];
      },
    });
    await expect(ops.addRoute()).rejects.toThrow('EEXIST');
    await ops.listRoutes();
    m.reconcile('routes', true);
    m.reconcile('routes', false);
    m.routeProgrammed(0.02);
    const text = (await renderMetrics(m.registry)).body;
    expect(text).toContain('underlay_plugin_requests_total{call="RequestAddress",result="ok"} 1');
    expect(text).toContain('underlay_plugin_requests_total{call="Join",result="unavailable"} 1');
    expect(text).toContain('underlay_netlink_errors_total{op="addRoute"} 1');
    expect(text).not.toContain('op="listRoutes"');
    expect(text).toContain('underlay_reconcile_passes_total{loop="routes"} 2');
    expect(text).toContain('underlay_reconcile_errors_total{loop="routes"} 1');
    expect(text).toContain('underlay_route_programming_seconds_count 1');
    expect(text).toContain('underlay_agent_applied_seq 5');
    expect(text).toContain('underlay_agent_seq_lag_events 3');
    expect(text).toContain('underlay_routes 3');
    expect(text).toContain('underlay_bgp_session_up{peer="198.51.100.254"} 1');
    expect(text).toContain('underlay_agent_ready 1');
  });
});

describe('controller IPAM counts', () => {
  it('counts per pool and node the addresses in use, those borrowed from another node\'s block, and the blocks', () => {
    const { engine, run } = engineWithLog();
    // A /28 pool in /28 blocks: one block, which node a claims; node b then borrows from it.
    const req = (node: string) => ({ node, space: 'underlay', pool: '198.18.0.0/28', subPool: '', options: { block_size: '28' }, v6: false });
    const { poolId } = run((s) => decideRequestPool(s, req('a')), 'node:a');
    run((s) => decideRequestPool(s, req('b')), 'node:b');
    for (let i = 0; i < 3; i++) run((s) => decideRequestAddress(s, { node: 'a', poolId, address: '', options: {} }), 'node:a');
    for (let i = 0; i < 2; i++) run((s) => decideRequestAddress(s, { node: 'b', poolId, address: '', options: {} }), 'node:b');
    const c = ipamCounts(engine.state);
    expect(c.size.get(poolId)).toBe(14);
    expect(Object.fromEntries(c.inUse.get(poolId)!)).toEqual({ a: 3, b: 2 });
    expect(Object.fromEntries(c.borrowed.get(poolId)!)).toEqual({ a: 0, b: 2 }) // a series at 0 for every node holding addresses or blocks;
    expect(Object.fromEntries(c.blocks.get(poolId)!)).toEqual({ a: 1 });
  });
});

describe('agent --listen', () => {
  it('defaults to 127.0.0.1:7411, takes HOST:PORT or [v6]:PORT, and is off with \'\' or off', () => {
    const cfg = (listen?: string) => AgentConfig.safeParse({ node: 'h1', nats: 'nats://127.0.0.1:4222', ...(listen === undefined ? {} : { listen }) });
    expect(parseListen(cfg().data!.listen)).toEqual({ host: '127.0.0.1', port: 7411 });
    expect(parseListen(cfg('198.51.100.1:9100').data!.listen)).toEqual({ host: '198.51.100.1', port: 9100 });
    expect(parseListen(cfg('[::1]:7411').data!.listen)).toEqual({ host: '::1', port: 7411 });
    expect(parseListen(cfg('').data!.listen)).toBeUndefined();
    expect(parseListen(cfg('off').data!.listen)).toBeUndefined();
    for (const bad of ['7411', 'host', '1.2.3.4:99999']) expect(cfg(bad).error?.issues[0]?.message).toMatch(/--listen must be HOST:PORT/);
  });
});
