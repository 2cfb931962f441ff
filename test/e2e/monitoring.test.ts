/**
 * Issue 12's monitoring acceptance on real parts: a real Prometheus (Debian's `prometheus` package) scrapes the
 * controller and every agent of a two-host lab (real dockerd and `underlay agent` processes, kernel macvlan links)
 * with the shipped alert rules loaded. After a scenario (a network created through the HTTP API, containers on both
 * hosts, one removed), `promtool check metrics` passes on every /metrics, every PromQL expression of the shipped
 * dashboards (deploy/grafana) returns data, and every metric the shipped alert rules read exists.
 *
 * Budgets: Prometheus' own steps come from test/lab/prometheus.ts (measured); the rate() windows of the dashboards
 * need two samples of each series, so after the scenario the test waits for two more scrapes of every target
 * (1 s interval, measured 1-2 s; budget 30 s, named in the failure).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BUSYBOX_IMAGE, withLab } from '../lab';
import { dashboardFileExpressions } from '../lab/promql';
import { evaluateExpressions, ruleMetricExpressions, startPrometheus, type PrometheusService } from '../lab/prometheus';
import { waitFor } from '../lab/wait';
import { run } from '../lab/run';
import { CLI, ROOT, startCluster, type Cluster } from './support/cluster';

jest.setTimeout(300_000);
const ctx = withLab({ hosts: ['h1', 'h2'] });
let cluster: Cluster;
let prom: PrometheusService;
let controllerTarget: string;
const agentTargets: string[] = [];

const DASHBOARDS = ['underlay-cluster.json', 'underlay-agent.json', 'underlay-traces.json'].map((f) => path.join(ROOT, 'deploy/grafana', f));
const RULES = path.join(ROOT, 'deploy/prometheus/underlay-alerts.yml');

beforeAll(async () => {
  // Each agent listens in its own namespace; the test (root namespace) reaches it over the lab bridge.
  cluster = await startCluster(ctx.lab, [ctx.host('h1'), ctx.host('h2')], { agentArgs: ['--listen', '0.0.0.0:7411'] });
  const { host, port } = cluster.controller.httpAddress!;
  controllerTarget = `${host}:${port}`;
  for (const h of ['h1', 'h2']) agentTargets.push(`${ctx.host(h).address}:7411`);
  prom = await startPrometheus({
    dir: ctx.lab.dir,
    jobs: [
      { job: 'underlay-controller', targets: [controllerTarget] },
      { job: 'underlay-agent', targets: agentTargets },
    ],
    ruleFiles: [RULES],
  });
  ctx.lab.onDestroy('prometheus', () => prom.stop());
}, 300_000);

async function underlay(args: string[]): Promise<string> {
  const env = { ...process.env, UNDERLAY_CONTROLLER: `http://${controllerTarget}`, UNDERLAY_TOKEN: cluster.controller.apiToken };
  const r = await run(process.execPath, [CLI, ...args], { env, timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`underlay ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

async function scrapeCount(instance: string): Promise<number> {
  const r = await prom.query(`prometheus_target_scrapes_total{instance="${instance}"} or count_over_time(up{instance="${instance}"}[1h])`);
  return Number(r.samples[0]?.value[1] ?? 0);
}

describe('monitoring on real parts', () => {
  it('every target is up and passes promtool check metrics', async () => {
    await prom.waitForData('up{job="underlay-agent"} == 1 and on() count(up{job="underlay-agent"} == 1) == 2');
    await prom.waitForData('up{job="underlay-controller"} == 1');
    for (const t of [controllerTarget, ...agentTargets]) {
      const res = await fetch(`http://${t}/metrics`, { signal: AbortSignal.timeout(10_000) });
      expect([t, res.status]).toEqual([t, 200]);
      const check = spawnSync('promtool', ['check', 'metrics'], { input: await res.text(), encoding: 'utf8', timeout: 30_000 });
      if (check.error) throw new Error(`promtool could not run (Debian package prometheus): ${check.error.message}`);
      expect({ target: t, status: check.status, out: `${check.stdout}${check.stderr}` }).toEqual({ target: t, status: 0, out: '' });
    }
  });

  it('after a scenario, every dashboard expression returns data and every metric the alert rules read exists', async () => {
    // The scenario: a cluster network through the HTTP API (it appears on both hosts), a container on each host,
    // one of them removed again.
    await underlay(['network', 'create', 'mon', '--subnet', '203.0.113.0/24', '--gateway', '203.0.113.1', '-o', 'parent=eth1']);
    for (const h of ['h1', 'h2']) {
      const d = cluster.nodes.get(h)!.docker;
      await waitFor(async () => (await d.docker(['network', 'inspect', 'mon'])).code === 0, { timeoutMs: 30_000, what: `the cluster network mon on ${h}` });
      await d.dockerOk(['run', '-d', '--name', `mon-${h}`, '--network', 'mon', BUSYBOX_IMAGE, 'sleep', '600']);
    }
    await cluster.nodes.get('h2')!.docker.dockerOk(['rm', '-f', 'mon-h2']);
    await underlay(['network', 'ls']);
    // Two more scrapes of every target after the scenario, so rate() over it has two samples.
    for (const t of [controllerTarget, ...agentTargets]) {
      const n0 = await scrapeCount(t);
      await waitFor(async () => (await scrapeCount(t)) >= n0 + 2, { timeoutMs: 30_000, what: `two more scrapes of ${t} after the scenario` });
    }

    const exprs = DASHBOARDS.flatMap((f) => dashboardFileExpressions(f));
    expect(exprs.length).toBeGreaterThan(30);
    const results = await evaluateExpressions(prom, exprs);
    const empty = results.filter((r) => r.samples === 0 || r.error).map((r) => `${r.where}: ${r.expr}${r.error ? ` (${r.error})` : ''}`);
    expect(empty).toEqual([]);

    const rules = await prom.rules();
    expect(rules.map((r) => r.name).sort()).toEqual(['UnderlayAgentLagging', 'UnderlayLeakedAddresses', 'UnderlayNoLeader', 'UnderlayNodeNotReady', 'UnderlayPoolNearlyFull']);
    for (const r of rules) expect([r.name, r.health, r.lastError ?? '']).toEqual([r.name, 'ok', '']);
    const ruleResults = await evaluateExpressions(prom, ruleMetricExpressions(rules));
    expect(ruleResults.filter((r) => r.samples === 0 || r.error).map((r) => r.where)).toEqual([]);
    // A healthy cluster fires nothing.
    expect(rules.filter((r) => r.state === 'firing').map((r) => r.name)).toEqual([]);
    fs.writeFileSync(path.join(ctx.lab.dir, 'expressions.json'), JSON.stringify(results, null, 2));
  });
});
