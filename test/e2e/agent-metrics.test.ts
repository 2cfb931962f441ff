/**
 * The agent's metrics and health (issue 12) on one lab host with a real dockerd and a real `underlay agent`
 * process: `--listen` on the host's lab address serves /healthz, /readyz and /metrics without a token; the
 * exposition passes `promtool check metrics` (Debian's prometheus package); a `docker run` on an underlay
 * network is counted per plugin call and per RPC; `/readyz` goes false (503, naming nats) when nats-server is
 * stopped (SIGSTOP) and true again after SIGCONT.
 *
 * Budgets: each readiness check answers within 2 s (the agent's deadline); measured here, false came ~2 s after
 * SIGSTOP and true well under 1 s after SIGCONT. The budgets are those with a wide margin for a loaded machine.
 */
import { spawnSync } from 'node:child_process';
import { BUSYBOX_IMAGE, withLab } from '../lab';
import { startCluster, type Cluster } from './support/cluster';

jest.setTimeout(240_000);
const ctx = withLab({ hosts: ['h1'] });
let cluster: Cluster;
let base: string;

const READY_BUDGET_MS = 60_000;
const NOT_READY_BUDGET_MS = 15_000;
const READY_AGAIN_BUDGET_MS = 30_000;

beforeAll(async () => {
  const h1 = ctx.host('h1');
  // The lab address: reachable from the test (root namespace) over the lab bridge.
  cluster = await startCluster(ctx.lab, [h1], { agentArgs: ['--listen', `${h1.address}:7411`] });
  base = `http://${h1.address}:7411`;
}, 300_000);

afterAll(() => {
  // In case a test failed between SIGSTOP and SIGCONT (the lab may have stopped nats-server already).
  try {
    if (cluster) process.kill(cluster.natsPid, 'SIGCONT');
  } catch {
    /* gone */
  }
});

async function get(path: string) {
  const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
}

function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

async function readyzBecomes(status: number, budgetMs: number, step: string): Promise<{ ms: number; body: any }> {
  const t0 = Date.now();
  let last = '';
  while (Date.now() - t0 < budgetMs) {
    try {
      const r = await get('/readyz');
      last = `${r.status} ${r.text.trim()}`;
      if (r.status === status) return { ms: Date.now() - t0, body: JSON.parse(r.text) };
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${step}: the agent's /readyz did not answer ${status} within ${budgetMs} ms (last: ${last})`);
}

describe('agent metrics and health', () => {
  it('serves /healthz and a ready /readyz on --listen', async () => {
    const h = await get('/healthz');
    expect(h.status).toBe(200);
    expect(JSON.parse(h.text)).toEqual({ status: 'ok' });
    const r = await readyzBecomes(200, READY_BUDGET_MS, 'agent start');
    expect(r.body).toEqual({ ready: true, checks: { nats: expect.objectContaining({ ok: true }), view: expect.objectContaining({ ok: true }), plugin: expect.objectContaining({ ok: true }) } });
    expect((await get('/v1/nodes')).status).toBe(404);
  });

  it('counts the plugin calls and RPCs of a docker run; promtool check metrics passes', async () => {
    const d = cluster.nodes.get('h1')!.docker;
    await d.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '198.18.9.0/24', '--gateway', '198.18.9.1', '-o', 'parent=eth1', 'm1']);
    await d.dockerOk(['run', '-d', '--name', 'm1c', '--network', 'm1', BUSYBOX_IMAGE, 'sleep', '600']);
    const m = await get('/metrics');
    expect(m.status).toBe(200);
    expect(m.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: m.text, encoding: 'utf8', timeout: 30_000 });
    if (check.error) throw new Error(`promtool check metrics could not run (install the Debian package prometheus): ${check.error.message}`);
    expect({ status: check.status, out: `${check.stdout}${check.stderr}` }).toEqual({ status: 0, out: '' });
    const s = samples(m.text);
    for (const call of ['CreateNetwork', 'RequestPool', 'RequestAddress', 'CreateEndpoint', 'Join']) {
      expect([call, s.get(`underlay_plugin_requests_total{call="${call}",result="ok"}`)]).toEqual([call, expect.any(Number)]);
      expect(s.get(`underlay_plugin_requests_total{call="${call}",result="ok"}`)).toBeGreaterThanOrEqual(1);
      expect(s.get(`underlay_plugin_request_duration_seconds_count{call="${call}"}`)).toBeGreaterThanOrEqual(1);
    }
    expect(s.get('underlay_rpc_client_requests_total{method="requestAddress",result="ok"}')).toBeGreaterThanOrEqual(2); // gateway and container
    expect(s.get('underlay_agent_applied_seq')).toBeGreaterThan(0);
    expect(s.get('underlay_agent_seq_lag_events')).toBeGreaterThanOrEqual(0);
    expect(s.get('underlay_agent_ready')).toBe(1);
    expect(s.get('underlay_reconcile_passes_total{loop="report"}')).toBeGreaterThanOrEqual(1);
    await d.dockerOk(['rm', '-f', 'm1c']);
    await d.dockerOk(['network', 'rm', 'm1']);
  });

  it('/readyz goes false when NATS stops and true again when it is back', async () => {
    const timings: string[] = [];
    process.kill(cluster.natsPid, 'SIGSTOP');
    try {
      const down = await readyzBecomes(503, NOT_READY_BUDGET_MS, 'nats-server stopped (SIGSTOP)');
      timings.push(`false after ${down.ms} ms`);
      expect(down.body.checks.nats.ok).toBe(false);
    } finally {
      process.kill(cluster.natsPid, 'SIGCONT');
    }
    const up = await readyzBecomes(200, READY_AGAIN_BUDGET_MS, 'nats-server continued (SIGCONT)');
    timings.push(`true again after ${up.ms} ms`);
    process.stdout.write(`agent readyz timings: ${timings.join(', ')}\n`);
  });
});
