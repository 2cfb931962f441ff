// test/lab/prometheus.ts against a real Prometheus (Debian's `prometheus` package): it scrapes a tiny fake
// exporter (an HTTP server in this test serving a few underlay_* metrics in the text format), loads the
// shipped alert rules, and answers PromQL over /api/v1/query: the dashboards' expressions evaluate without
// error (the ones over the fake's metrics return data), and UnderlayPoolNearlyFull goes pending.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort } from '../lab/probes';
import { isAlive } from '../lab/procfs';
import { dashboardFileExpressions } from '../lab/promql';
import { evaluateExpressions, prometheusBudgetMs, ruleMetricExpressions, startPrometheus, type PrometheusService } from '../lab/prometheus';
import { waitFor } from '../lab/wait';

const ROOT = path.resolve(__dirname, '../..');
const RULES = path.join(ROOT, 'deploy/prometheus/underlay-alerts.yml');
const FIRST_SCRAPE_MS = prometheusBudgetMs('prometheus first scrape');

/** A fake controller's /metrics: pool p1 at 240 of 254, one leader, requestAddress served once per scrape. */
function exporterText(scrapes: number): string {
  const buckets = [0.005, 0.01, 0.05, 0.1, 0.5, 1];
  const lines = [
    '# HELP underlay_leader 1 when this controller is the serving leader',
    '# TYPE underlay_leader gauge',
    'underlay_leader 1',
    '# HELP underlay_ipam_pool_size_addresses usable addresses in the pool',
    '# TYPE underlay_ipam_pool_size_addresses gauge',
    'underlay_ipam_pool_size_addresses{pool="p1"} 254',
    '# HELP underlay_ipam_addresses_in_use addresses allocated to the node',
    '# TYPE underlay_ipam_addresses_in_use gauge',
    'underlay_ipam_addresses_in_use{pool="p1",node="h1"} 130',
    'underlay_ipam_addresses_in_use{pool="p1",node="h2"} 110',
    '# HELP underlay_rpc_requests_total NATS requests served',
    '# TYPE underlay_rpc_requests_total counter',
    `underlay_rpc_requests_total{method="requestAddress",result="ok"} ${scrapes}`,
    '# HELP underlay_rpc_request_duration_seconds time from receipt to reply',
    '# TYPE underlay_rpc_request_duration_seconds histogram',
    ...buckets.map((le) => `underlay_rpc_request_duration_seconds_bucket{method="requestAddress",le="${le}"} ${le >= 0.01 ? scrapes : 0}`),
    `underlay_rpc_request_duration_seconds_bucket{method="requestAddress",le="+Inf"} ${scrapes}`,
    `underlay_rpc_request_duration_seconds_sum{method="requestAddress"} ${(scrapes * 0.008).toFixed(3)}`,
    `underlay_rpc_request_duration_seconds_count{method="requestAddress"} ${scrapes}`,
  ];
  return `${lines.join('\n')}\n`;
}

let dir: string;
let server: http.Server | undefined;
let port: number;
let scrapes = 0;
let prom: PrometheusService | undefined;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'underlay-prom-'));
  port = await freePort();
  server = http.createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    scrapes++;
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(exporterText(scrapes));
  });
  await new Promise<void>((resolve, reject) => {
    server!.once('error', reject);
    server!.listen(port, '127.0.0.1', resolve);
  });
  prom = await startPrometheus({ dir, jobs: [{ job: 'underlay-controller', targets: [`127.0.0.1:${port}`] }], ruleFiles: [RULES] });
}, prometheusBudgetMs('prometheus start') + 10_000);

afterAll(async () => {
  const p = prom;
  if (p) {
    await p.stop();
    expect(isAlive(p.proc.ref)).toBe(false);
  }
  if (server) await new Promise<void>((resolve) => server!.close(() => resolve()));
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}, prometheusBudgetMs('prometheus stop') + 10_000);

test('Prometheus scrapes the fake exporter and answers PromQL over it', async () => {
  const leader = await prom!.waitForData('underlay_leader');
  expect(leader.samples).toEqual([{ metric: expect.objectContaining({ __name__: 'underlay_leader', job: 'underlay-controller', instance: `127.0.0.1:${port}` }), value: [expect.any(Number), '1'] }]);
  expect(await prom!.targets()).toEqual([expect.objectContaining({ job: 'underlay-controller', health: 'up' })]);

  // The cluster dashboard's pool-use expression: (130 + 110) / 254.
  const use = await prom!.query('sum by (pool) (max by (pool, node) (underlay_ipam_addresses_in_use)) / on (pool) max by (pool) (underlay_ipam_pool_size_addresses)');
  expect(use.samples).toHaveLength(1);
  expect(use.samples[0]!.metric).toEqual({ pool: 'p1' });
  expect(Number(use.samples[0]!.value[1])).toBeCloseTo(240 / 254, 6);

  // A rate needs two scrapes (1 s apart): the allocation rate of the cluster dashboard, one request per scrape.
  const rate = await prom!.waitForData('sum(rate(underlay_rpc_requests_total{method="requestAddress",result="ok"}[1m])) > 0', FIRST_SCRAPE_MS);
  expect(Number(rate.samples[0]!.value[1])).toBeGreaterThan(0);
  const p99 = await prom!.waitForData('histogram_quantile(0.99, sum by (le) (rate(underlay_rpc_request_duration_seconds_bucket{method="requestAddress"}[1m])))', FIRST_SCRAPE_MS);
  expect(Number(p99.samples[0]!.value[1])).toBeGreaterThan(0.005);
  expect(Number(p99.samples[0]!.value[1])).toBeLessThanOrEqual(0.01);
}, 3 * FIRST_SCRAPE_MS + 10_000);

test('a PromQL error comes back with Prometheus\' message', async () => {
  await expect(prom!.query('sum by (pool) (')).rejects.toThrow(/bad_data.*parse error/);
});

test('every dashboard expression evaluates without error; those over the fake\'s metrics return data', async () => {
  await prom!.waitForData('underlay_rpc_requests_total', FIRST_SCRAPE_MS);
  const exprs = ['underlay-cluster.json', 'underlay-agent.json', 'underlay-traces.json'].flatMap((f) => dashboardFileExpressions(path.join(ROOT, 'deploy/grafana', f)));
  const results = await evaluateExpressions(prom!, exprs);
  expect(results.filter((r) => r.error !== undefined)).toEqual([]);
  const withData = results.filter((r) => r.samples > 0).map((r) => r.where);
  // Pool use, in use per pool/node, allocation rate, requestAddress latency, leader … (the agent's are absent here).
  expect(withData).toEqual(expect.arrayContaining([
    "underlay-cluster.json: panel 'Pool use' target A",
    "underlay-cluster.json: panel 'Leader' target A",
    "underlay-cluster.json: panel 'Address allocation rate' target A",
    "underlay-cluster.json: panel 'requestAddress latency' target B",
    "underlay-cluster.json: variable 'pool'",
  ]));
}, 2 * FIRST_SCRAPE_MS + 30_000);

test('the shipped alert rules load; UnderlayPoolNearlyFull goes pending over the fake (94 % full)', async () => {
  const rules = await prom!.rules();
  expect(rules.map((r) => r.name).sort()).toEqual(['UnderlayAgentLagging', 'UnderlayLeakedAddresses', 'UnderlayNoLeader', 'UnderlayNodeNotReady', 'UnderlayPoolNearlyFull']);
  for (const r of rules) expect({ name: r.name, group: r.group, type: r.type }).toEqual({ name: r.name, group: 'underlay', type: 'alerting' });
  await waitFor(async () => (await prom!.rules()).find((r) => r.name === 'UnderlayPoolNearlyFull')?.state === 'pending', {
    timeoutMs: FIRST_SCRAPE_MS,
    what: 'alert UnderlayPoolNearlyFull to go pending (rule evaluation every 1 s after a scrape)',
    intervalMs: 250,
  });
  const after = await prom!.rules();
  expect(after.find((r) => r.name === 'UnderlayNoLeader')).toMatchObject({ state: 'inactive', health: 'ok' });
  // The metrics the rules read: the fake serves the pool and leader ones only.
  const present = (await evaluateExpressions(prom!, ruleMetricExpressions(after))).filter((r) => r.samples > 0).map((r) => r.where);
  expect(present.sort()).toEqual([
    'rule UnderlayNoLeader: underlay_leader',
    'rule UnderlayPoolNearlyFull: underlay_ipam_addresses_in_use',
    'rule UnderlayPoolNearlyFull: underlay_ipam_pool_size_addresses',
  ]);
}, FIRST_SCRAPE_MS + 10_000);
