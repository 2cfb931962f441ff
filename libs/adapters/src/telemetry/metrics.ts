/**
 * Metrics and health shared by the controller and the agent (issue 12; names in docs/ARCHITECTURE.md,
 * "Metrics and health"):
 *
 * - `createMetricsRegistry()`: one prom-client registry per service, with prom-client's default process
 *   metrics (no prefix). Each service registers its `underlay_*` metrics on it.
 * - `renderMetrics(registry, accept)`: the exposition. Prometheus text 0.0.4 by default; OpenMetrics 1.0 (with the
 *   histograms' `trace_id` exemplars) when the scraper's Accept asks for `application/openmetrics-text`.
 * - `runReadiness(checks, deadlineMs)`: runs named checks at once, each bounded by the deadline (a check that does
 *   not answer in time is not ok, and its work is told to stop through the signal); ready when every check is ok.
 * - `serveTelemetry(req, res, …)`: `GET /metrics`, `/healthz`, `/readyz` on a plain node:http server (the agent's
 *   `--listen`); the controller routes the same three through its API's route table.
 * - `rpcMetrics(registry, side)`: the observer `serveRpc` / `RpcClient` call once per request (nats/rpc.ts).
 */
import type * as http from 'node:http';
import { Counter, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';

export { Counter, Gauge, Histogram, Registry } from 'prom-client';

export const PROMETHEUS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;
export const OPENMETRICS_CONTENT_TYPE = Registry.OPENMETRICS_CONTENT_TYPE;

/** A registry for one service; with `defaultMetrics` (the default) prom-client's process metrics too. */
export function createMetricsRegistry(opts: { defaultMetrics?: boolean } = {}): Registry {
  // An OpenMetrics registry (prom-client allows exemplars only there); renderMetrics renders it in either format.
  const registry = new (Registry as unknown as new (contentType: string) => Registry)(OPENMETRICS_CONTENT_TYPE);
  if (opts.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry });
    // Gauges named `…_total` (nodejs_active_handles_total, …): `promtool check metrics` refuses them.
    for (const m of registry.getMetricsAsArray() as unknown as { name: string; type?: string }[]) {
      const type = (m as { type?: string }).type ?? '';
      if (m.name.endsWith('_total') && type !== 'counter') registry.removeSingleMetric(m.name);
    }
  }
  return registry;
}

/** True when an Accept header asks for OpenMetrics. */
export function wantsOpenMetrics(accept: string | string[] | undefined): boolean {
  const text = Array.isArray(accept) ? accept.join(',') : (accept ?? '');
  return /application\/openmetrics-text/i.test(text);
}

/** Expositions of one registry, one at a time (prom-client renames counters while it renders OpenMetrics). */
const queues = new WeakMap<Registry, Promise<unknown>>();

/**
 * The registry's metrics in the format the Accept header asks for. prom-client renders OpenMetrics by stripping
 * `_total` from each counter's name in place; the names are put back after, and renders of one registry run one
 * at a time, so a text scrape never sees the stripped names.
 */
export function renderMetrics(registry: Registry, accept?: string | string[]): Promise<{ contentType: string; body: string }> {
  const open = wantsOpenMetrics(accept);
  const run = async () => {
    const metrics = registry.getMetricsAsArray() as unknown as (Metric & { name: string })[];
    const names = metrics.map((m) => m.name);
    // The constructor takes the content type (prom-client's typings omit it).
    const View = Registry as unknown as new (contentType: string) => Registry<typeof OPENMETRICS_CONTENT_TYPE | typeof PROMETHEUS_CONTENT_TYPE>;
    const view = new View(open ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE);
    for (const m of metrics) view.registerMetric(m as Metric);
    try {
      return { contentType: view.contentType, body: await view.metrics() };
    } finally {
      metrics.forEach((m, i) => (m.name = names[i]!));
    }
  };
  const prev = queues.get(registry) ?? Promise.resolve();
  const next = prev.then(run, run);
  queues.set(registry, next.catch(() => undefined));
  return next;
}

/** The exemplar labels of a W3C traceparent (`00-<trace id>-<span id>-<flags>`), or none. */
export function traceExemplar(traceparent: string | undefined): Record<string, string> {
  const m = traceparent ? /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(traceparent) : null;
  return m && !/^0+$/.test(m[1]!) ? { trace_id: m[1]! } : {};
}

// ---------------------------------------------------------------------------------------------
// Readiness

export interface CheckResult {
  ok: boolean;
  detail?: string;
}

/** A readiness check: resolves ok/not ok (or throws: not ok, with the error's message). */
export type ReadinessCheck = (signal: AbortSignal) => Promise<CheckResult | boolean>;

export interface Readiness {
  ready: boolean;
  checks: Record<string, CheckResult>;
}

/** Runs every check at once, each within `deadlineMs`; ready when all are ok. */
export async function runReadiness(checks: Record<string, ReadinessCheck>, deadlineMs: number): Promise<Readiness> {
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, check]): Promise<[string, CheckResult]> => {
      const ac = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<CheckResult>((resolve) => {
        timer = setTimeout(() => {
          ac.abort();
          resolve({ ok: false, detail: `no answer within ${deadlineMs} ms` });
        }, deadlineMs);
      });
      const run = (async (): Promise<CheckResult> => {
        try {
          const r = await check(ac.signal);
          return typeof r === 'boolean' ? { ok: r } : r;
        } catch (e) {
          return { ok: false, detail: (e as Error)?.message ?? String(e) };
        }
      })();
      try {
        return [name, await Promise.race([run, late])];
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const result = Object.fromEntries(entries);
  return { ready: entries.every(([, r]) => r.ok), checks: result };
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface TelemetryEndpoints {
  registry: Registry;
  readiness(): Promise<Readiness>;
}

function sendText(res: http.ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

const json = (res: http.ServerResponse, status: number, body: unknown) => sendText(res, status, 'application/json; charset=utf-8', `${JSON.stringify(body)}\n`);

/** Writes the answer to `GET /metrics` (the exposition). */
export async function answerMetrics(req: http.IncomingMessage, res: http.ServerResponse, registry: Registry): Promise<void> {
  const { contentType, body } = await renderMetrics(registry, req.headers.accept);
  sendText(res, 200, contentType, body);
}

/** `/healthz`'s body. */
export const HEALTHY = { status: 'ok' } as const;

/**
 * Answers `GET /metrics`, `/healthz` and `/readyz` (HEAD too); any other path is a JSON 404 and any other method a
 * 405. For a server that serves nothing else (the agent's --listen).
 */
export async function serveTelemetry(req: http.IncomingMessage, res: http.ServerResponse, endpoints: TelemetryEndpoints): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz') {
    json(res, 404, { error: { code: 'not-found', message: `no such path: ${path}; this listener serves /metrics, /healthz and /readyz` } });
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    json(res, 405, { error: { code: 'method-not-allowed', message: `${req.method} is not allowed on ${path}; allowed: GET` } });
    return;
  }
  try {
    if (path === '/metrics') await answerMetrics(req, res, endpoints.registry);
    else if (path === '/healthz') json(res, 200, HEALTHY);
    else {
      const r = await endpoints.readiness();
      json(res, r.ready ? 200 : 503, r);
    }
  } catch (e) {
    if (!res.headersSent) json(res, 500, { error: { code: 'internal', message: (e as Error)?.message ?? String(e) } });
    else res.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// RPC

/** Called once per RPC request when it ends: its method, `ok` or the error code, its duration and traceparent. */
export type RpcObserver = (method: string, result: string, seconds: number, traceparent?: string) => void;

/** Seconds: 1 ms to 10 s (an RPC waits for the group commit, a few ms to tens of ms). */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The request counter and latency histogram of one RPC side: `server` (underlay_rpc_requests_total,
 * underlay_rpc_request_duration_seconds) or `client` (underlay_rpc_client_…), as the observer to pass to
 * serveRpc's / RpcClient's `observe`.
 */
export function rpcMetrics(registry: Registry, side: 'server' | 'client'): RpcObserver {
  const prefix = side === 'server' ? 'underlay_rpc' : 'underlay_rpc_client';
  const what = side === 'server' ? 'NATS RPC requests served' : 'NATS RPC requests sent to the controllers';
  return requestMetrics(registry, prefix, 'method', what, side === 'server' ? 'time from receipt to reply' : 'time from the first attempt to the answer, retries included');
}

/** A `<prefix>_requests_total{<label>,result}` counter and `<prefix>_request_duration_seconds{<label>}` histogram. */
export function requestMetrics(registry: Registry, prefix: string, label: string, what: string, duration: string): RpcObserver {
  const total = new Counter({ name: `${prefix}_requests_total`, help: `${what}, by ${label} and result (ok or the error code)`, labelNames: [label, 'result'], registers: [registry] });
  const seconds = new Histogram({
    name: `${prefix}_request_duration_seconds`,
    help: `${what}: ${duration}`,
    labelNames: [label],
    buckets: LATENCY_BUCKETS,
    enableExemplars: true,
    registers: [registry],
  });
  return (name, result, s, traceparent) => {
    total.inc({ [label]: name, result });
    seconds.observe({ labels: { [label]: name }, value: s, exemplarLabels: traceExemplar(traceparent) });
  };
}

/** Seconds since a `process.hrtime.bigint()` start. */
export function secondsSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}
