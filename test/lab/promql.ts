// The PromQL in the shipped monitoring files: `dashboardExpressions` lists every Prometheus expression of a
// Grafana dashboard (panel targets, nested rows included, and the query variables' metric selectors) with
// Grafana's variables replaced so Prometheus itself can parse and evaluate it; `metricNamesIn` lists the
// underlay_* metric names an expression uses; `readMetricNames` reads deploy/prometheus/metric-names.txt.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface DashboardExpression {
  /** "underlay-cluster.json: panel 'Pool use' target A" */
  where: string;
  /** As written in the dashboard. */
  raw: string;
  /** With the variables replaced: valid PromQL. */
  expr: string;
}

interface GrafanaTarget {
  refId?: string;
  expr?: string;
  datasource?: { type?: string; uid?: string } | string | null;
}
interface GrafanaPanel {
  title?: string;
  type?: string;
  datasource?: { type?: string; uid?: string } | string | null;
  targets?: GrafanaTarget[];
  panels?: GrafanaPanel[];
}
interface GrafanaVariable {
  name: string;
  type: string;
  query?: string | { query?: string };
  datasource?: { type?: string; uid?: string } | string | null;
  current?: { value?: string | string[] };
  options?: Array<{ value?: string }>;
}
export interface GrafanaDashboard {
  title?: string;
  uid?: string;
  panels?: GrafanaPanel[];
  templating?: { list?: GrafanaVariable[] };
}

/** Grafana's built-in interval variables, replaced by durations valid in a range selector. */
const BUILTINS: Record<string, string> = {
  __rate_interval: '1m',
  __interval: '15s',
  __range: '1h',
};

function isPrometheus(ds: GrafanaTarget['datasource'], fallback: GrafanaPanel['datasource']): boolean {
  const d = ds ?? fallback;
  if (d === undefined || d === null) return true; // the dashboard's default data source
  if (typeof d === 'string') return !/tempo|jaeger|loki/i.test(d);
  return d.type === undefined || d.type === 'prometheus';
}

/**
 * Replaces Grafana variables: built-in intervals by a duration; a custom variable by its current value (Top N
 * "10", a duration); a query variable (used inside `=~"…"` matchers) by `.*`, which matches every value.
 */
export function substituteVariables(raw: string, variables: readonly GrafanaVariable[]): string {
  const values = new Map<string, string>(Object.entries(BUILTINS));
  for (const v of variables) {
    if (v.type === 'query') values.set(v.name, '.*');
    else if (v.type === 'custom' || v.type === 'constant' || v.type === 'interval' || v.type === 'textbox') {
      const cur = v.current?.value ?? v.options?.[0]?.value ?? '';
      values.set(v.name, Array.isArray(cur) ? (cur[0] ?? '') : cur);
    }
  }
  return raw.replace(/\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)/g, (whole, a?: string, b?: string, c?: string) => {
    const name = a ?? b ?? c ?? '';
    const v = values.get(name);
    if (v === undefined) throw new Error(`unknown Grafana variable ${whole} in ${raw}`);
    return v;
  });
}

/** `label_values(selector, label)` → selector; `query_result(expr)` → expr; `metrics(re)`/`label_names()` → none. */
function variableExpression(q: string): string | undefined {
  const lv = /^\s*label_values\(\s*(.*?)\s*,\s*\w+\s*\)\s*$/s.exec(q);
  if (lv) return lv[1];
  const qr = /^\s*query_result\(\s*(.*)\s*\)\s*$/s.exec(q);
  if (qr) return qr[1];
  if (/^\s*(label_values\(\s*\w+\s*\)|metrics\(|label_names\()/.test(q)) return undefined;
  return q;
}

/** Every Prometheus expression of a dashboard, variables replaced. */
export function dashboardExpressions(d: GrafanaDashboard, file = d.uid ?? d.title ?? 'dashboard'): DashboardExpression[] {
  const vars = d.templating?.list ?? [];
  const out: DashboardExpression[] = [];
  const add = (where: string, raw: string): void => {
    out.push({ where: `${file}: ${where}`, raw, expr: substituteVariables(raw, vars) });
  };
  const walk = (panels: readonly GrafanaPanel[]): void => {
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        if (t.expr !== undefined && t.expr.trim() !== '' && isPrometheus(t.datasource, p.datasource)) {
          add(`panel '${p.title ?? '?'}' target ${t.refId ?? '?'}`, t.expr);
        }
      }
      walk(p.panels ?? []);
    }
  };
  walk(d.panels ?? []);
  for (const v of vars) {
    if (v.type !== 'query' || !isPrometheus(v.datasource, undefined)) continue;
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    const e = q === undefined ? undefined : variableExpression(q);
    if (e) add(`variable '${v.name}'`, e);
  }
  return out;
}

/** Reads a dashboard JSON file and lists its expressions. */
export function dashboardFileExpressions(file: string): DashboardExpression[] {
  return dashboardExpressions(JSON.parse(fs.readFileSync(file, 'utf8')) as GrafanaDashboard, path.basename(file));
}

/** underlay_* metric names an expression (or any text) uses, histogram suffixes kept. */
export function metricNamesIn(text: string): string[] {
  return [...new Set(text.match(/\bunderlay_[a-z0-9_]+/g) ?? [])];
}

export interface MetricName {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary';
}

/** deploy/prometheus/metric-names.txt: `name type` per line, `#` comments. */
export function readMetricNames(file: string): MetricName[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l !== '')
    .map((l) => {
      const [name, type, extra] = l.split(/\s+/);
      if (!name || !/^underlay_[a-z0-9_]+$/.test(name) || !['counter', 'gauge', 'histogram', 'summary'].includes(type ?? '') || extra) {
        throw new Error(`${file}: bad line '${l}' (want 'underlay_name type')`);
      }
      return { name, type: type as MetricName['type'] };
    });
}

/** The series names a list of metrics exposes: a histogram's _bucket, _sum and _count besides its own name. */
export function seriesNames(metrics: readonly MetricName[]): Set<string> {
  const out = new Set<string>();
  for (const m of metrics) {
    out.add(m.name);
    if (m.type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.add(m.name + s);
    if (m.type === 'summary') for (const s of ['_sum', '_count']) out.add(m.name + s);
  }
  return out;
}
