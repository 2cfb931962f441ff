// A throw-away Prometheus (Debian's `prometheus` package, 2.42): `startPrometheus` writes a configuration
// (scrape every second, the given static targets, the given rule files), starts the server on a free port
// with a temporary data directory and resolves once it is ready; `query` evaluates PromQL over its HTTP API
// (/api/v1/query), `waitForData` polls an expression until it returns a sample (after the first scrapes),
// `rules` lists the rules it loaded with their state. Used by test/integration/prometheus-lab.test.ts and by
// the acceptance "every PromQL expression in the dashboards and alert rules returns data after the scenario"
// (with `dashboardExpressions` from promql.ts).
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { labFactor } from './budget';
import { freePort, httpGet } from './probes';
import { requireExecutable } from './run';
import { type Proc, spawnLogged, stopProcess } from './spawn';
import { waitFor } from './wait';

/**
 * Budgets of Prometheus' slow steps, measured on the development VM (2026-12-05, 2 vCPU): ready on /-/ready
 * after 0.12 s; the first sample of a target after 5.3 s (the discovery manager hands targets to the scrape
 * manager every 5 s, then the first scrape falls within one interval); SIGTERM to exit 0.06 s.
 * budget = max(floor, measured × margin) × machine factor (test/lab/budget.ts's `labFactor`).
 */
const STEPS = {
  'prometheus start': { measuredMs: 150, floorMs: 10_000 },
  'prometheus first scrape': { measuredMs: 5_300, floorMs: 10_000 },
  'prometheus stop': { measuredMs: 100, floorMs: 5_000 },
} as const;
const MARGIN = 4;
export type PrometheusStep = keyof typeof STEPS;

export function prometheusBudgetMs(step: PrometheusStep): number {
  const { measuredMs, floorMs } = STEPS[step];
  return Math.ceil(Math.max(floorMs, measuredMs * MARGIN) * labFactor());
}

function stepWhat(step: PrometheusStep, what: string): string {
  const { measuredMs } = STEPS[step];
  return `${what} (step '${step}': measured ${measuredMs / 1000} s × margin ${MARGIN} × machine factor ${labFactor()}, floor ${STEPS[step].floorMs / 1000} s; test/lab/prometheus.ts)`;
}

export interface ScrapeJob {
  job: string;
  /** host:port of each target. */
  targets: string[];
  /** Default /metrics. */
  metricsPath?: string;
  /** Extra labels on every series of these targets. */
  labels?: Record<string, string>;
}

export interface PrometheusOptions {
  /** Parent directory; the server gets `<dir>/<name>` for its configuration, data and log. */
  dir: string;
  jobs: ScrapeJob[];
  /** Rule files (absolute paths or relative to the process' cwd), evaluated every `intervalS`. */
  ruleFiles?: string[];
  /** Scrape and evaluation interval, seconds. Default 1. */
  intervalS?: number;
  /** Listen address. Default 127.0.0.1 (the lab bridge address reaches targets in host namespaces either way). */
  host?: string;
  name?: string;
}

/** One series of an instant query: its labels and [unix seconds, value as text]. */
export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface PromQueryResult {
  resultType: 'vector' | 'scalar' | 'matrix' | 'string';
  /** For a vector: the samples; a scalar or string is given as one sample without labels. */
  samples: PromSample[];
}

export interface PromRule {
  group: string;
  name: string;
  type: 'alerting' | 'recording';
  query: string;
  /** Alerting rules: inactive, pending or firing. */
  state?: string;
  health: string;
  lastError?: string;
}

export interface PrometheusService {
  name: string;
  /** http://host:port */
  url: string;
  port: number;
  pid: number;
  proc: Proc;
  dir: string;
  configFile: string;
  logFile: string;
  /** Evaluates an instant query; throws with Prometheus' error text (a parse error, say). */
  query(expr: string, time?: Date): Promise<PromQueryResult>;
  /** Polls `expr` until it returns at least one sample; the timeout names the expression and shows the targets' health. */
  waitForData(expr: string, timeoutMs?: number): Promise<PromQueryResult>;
  /** Scrape targets and their health (up/down, last error). */
  targets(): Promise<Array<{ job: string; instance: string; health: string; lastError: string }>>;
  /** The rules loaded from the rule files. */
  rules(): Promise<PromRule[]>;
  /** SIGTERM (then SIGKILL); idempotent. The directory stays until the caller removes it. */
  stop(): Promise<void>;
}

interface ApiAnswer<T> {
  status: 'success' | 'error';
  data?: T;
  errorType?: string;
  error?: string;
}

async function apiGet<T>(url: string): Promise<T> {
  const r = await httpGet(url, 5_000);
  let body: ApiAnswer<T>;
  try {
    body = JSON.parse(r.body) as ApiAnswer<T>;
  } catch {
    throw new Error(`Prometheus ${url}: HTTP ${r.status}, not JSON: ${r.body.slice(0, 200)}`);
  }
  if (body.status !== 'success' || body.data === undefined) {
    throw new Error(`Prometheus ${url}: HTTP ${r.status} ${body.errorType ?? ''}: ${body.error ?? r.body.slice(0, 200)}`);
  }
  return body.data;
}

/** The configuration file's text (YAML is a superset of JSON: written as JSON). */
export function prometheusConfig(opts: Pick<PrometheusOptions, 'jobs' | 'ruleFiles' | 'intervalS'>): string {
  const interval = `${opts.intervalS ?? 1}s`;
  return `${JSON.stringify(
    {
      global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
      rule_files: (opts.ruleFiles ?? []).map((f) => path.resolve(f)),
      scrape_configs: opts.jobs.map((j) => ({
        job_name: j.job,
        metrics_path: j.metricsPath ?? '/metrics',
        static_configs: [{ targets: j.targets, ...(j.labels ? { labels: j.labels } : {}) }],
      })),
    },
    null,
    2,
  )}\n`;
}

/** Starts Prometheus; resolves when /-/ready answers 200. Stop it with `stop()` (the caller's afterAll). */
export async function startPrometheus(opts: PrometheusOptions): Promise<PrometheusService> {
  const bin = requireExecutable('prometheus', 'install the Debian package prometheus');
  const host = opts.host ?? '127.0.0.1';
  const name = opts.name ?? `prometheus-${crypto.randomBytes(3).toString('hex')}`;
  const dir = path.join(opts.dir, name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  const configFile = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(configFile, prometheusConfig(opts));
  const port = await freePort(host);
  const url = `http://${host}:${port}`;
  const logFile = path.join(dir, 'prometheus.log');
  const proc = spawnLogged(
    bin,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=${host}:${port}`,
      // Latency histograms carry trace-id exemplars (OpenMetrics); keep them so exemplar queries can be tested.
      '--enable-feature=exemplar-storage',
      '--log.level=info',
    ],
    { name, logFile },
  );
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => (stopping ??= stopProcess(proc, 'SIGTERM', prometheusBudgetMs('prometheus stop')));
  try {
    await waitFor(async () => (await httpGet(`${url}/-/ready`, 1_000)).status === 200, {
      timeoutMs: prometheusBudgetMs('prometheus start'),
      what: stepWhat('prometheus start', `prometheus ${name} at ${url}/-/ready to answer 200`),
      proc,
      intervalMs: 50,
    });
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }

  const query = async (expr: string, time?: Date): Promise<PromQueryResult> => {
    const params = new URLSearchParams({ query: expr });
    if (time) params.set('time', String(time.getTime() / 1000));
    const data = await apiGet<{ resultType: PromQueryResult['resultType']; result: unknown }>(`${url}/api/v1/query?${params}`);
    if (data.resultType === 'vector' || data.resultType === 'matrix') {
      return { resultType: data.resultType, samples: data.result as PromSample[] };
    }
    return { resultType: data.resultType, samples: [{ metric: {}, value: data.result as [number, string] }] };
  };
  const targets: PrometheusService['targets'] = async () => {
    const data = await apiGet<{ activeTargets: Array<{ labels: Record<string, string>; health: string; lastError: string }> }>(`${url}/api/v1/targets`);
    return data.activeTargets.map((t) => ({ job: t.labels.job ?? '', instance: t.labels.instance ?? '', health: t.health, lastError: t.lastError }));
  };
  const service: PrometheusService = {
    name,
    url,
    port,
    pid: proc.pid,
    proc,
    dir,
    configFile,
    logFile,
    query,
    targets,
    async waitForData(expr, timeoutMs = prometheusBudgetMs('prometheus first scrape')) {
      try {
        return await waitFor(async () => {
          const r = await query(expr);
          return r.samples.length > 0 ? r : undefined;
        }, { timeoutMs, what: stepWhat('prometheus first scrape', `Prometheus ${url} to return data for ${expr}`), proc, intervalMs: 250 });
      } catch (e) {
        const t = await targets().catch((err: Error) => `targets unknown: ${err.message}`);
        throw new Error(`${(e as Error).message}\n  scrape targets: ${JSON.stringify(t)}`);
      }
    },
    async rules() {
      const data = await apiGet<{ groups: Array<{ name: string; rules: Array<Omit<PromRule, 'group'>> }> }>(`${url}/api/v1/rules`);
      return data.groups.flatMap((g) => g.rules.map((r) => ({ group: g.name, name: r.name, type: r.type, query: r.query, state: r.state, health: r.health, lastError: r.lastError })));
    },
    stop,
  };
  return service;
}

/** One expression evaluated: how many samples it returned, or Prometheus' error. */
export interface ExpressionResult {
  where: string;
  expr: string;
  samples: number;
  error?: string;
}

/**
 * Evaluates each expression (e.g. `dashboardExpressions` of promql.ts) as an instant query. For the acceptance
 * "every expression returns data after the scenario": `.filter((r) => r.samples === 0 || r.error)` is the list
 * to report.
 */
export async function evaluateExpressions(prom: Pick<PrometheusService, 'query'>, exprs: ReadonlyArray<{ where: string; expr: string }>): Promise<ExpressionResult[]> {
  const out: ExpressionResult[] = [];
  for (const e of exprs) {
    try {
      out.push({ where: e.where, expr: e.expr, samples: (await prom.query(e.expr)).samples.length });
    } catch (err) {
      out.push({ where: e.where, expr: e.expr, samples: 0, error: (err as Error).message });
    }
  }
  return out;
}

/**
 * An alert's expression returns data only while its condition holds. What can be asked of a healthy cluster is
 * that every metric an alert rule reads exists: one `count(<metric>)` per underlay_* name of each rule (the rules
 * as `rules()` reports them).
 */
export function ruleMetricExpressions(rules: readonly PromRule[]): Array<{ where: string; expr: string }> {
  return rules.flatMap((r) =>
    [...new Set(r.query.match(/\bunderlay_[a-z0-9_]+/g) ?? [])].map((m) => ({ where: `rule ${r.name}: ${m}`, expr: `count(${m})` })),
  );
}
