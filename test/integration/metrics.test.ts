/**
 * The controller's metrics and health on real etcd, NATS and a controller (issue 12): `GET /metrics` without a
 * token passes `promtool check metrics` (Debian's prometheus package) in the text format and answers OpenMetrics
 * when asked; the IPAM gauges equal the allocations made (per pool and node, borrowed and blocks); RPC and group
 * commit metrics count them; `/readyz` is true, false (503, naming etcd) within its budget once etcd is stopped
 * (SIGSTOP), and true again after SIGCONT.
 *
 * Budgets: readiness's own deadline is 2 s; measured here (3 runs), false came 2.0 s after SIGSTOP and true 5.4 to
 * 17.7 s after SIGCONT (etcd's client waits up to 5 s before trying a failed endpoint again, and the leader may
 * have lost its lease and campaign again). The budgets below are those times with a margin of about 5 for a
 * loaded 2-core machine.
 */
import { spawnSync } from 'node:child_process';
import type { Controller } from '@underlay/controller';
import type { RpcClient } from '@underlay/adapters';
import { FakeDockerHost, startEnv, type Env } from './support';

jest.setTimeout(180_000);

const NOT_READY_BUDGET_MS = 15_000;
const READY_AGAIN_BUDGET_MS = 90_000;

let env: Env;
let c: Controller;
let base: string;
let rpc: RpcClient;

beforeAll(async () => {
  env = await startEnv();
  c = await env.controller({ apiToken: 'test-token-0123456789abcdef' });
  base = `http://127.0.0.1:${c.httpAddress!.port}`;
  rpc = await env.client();
});

afterAll(async () => {
  if (env) process.kill(env.etcd.pid, 'SIGCONT');
  await env?.close();
});

async function get(path: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, { headers, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
}

/** Samples of the text exposition: `name{labels}` → value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

function promtool(text: string): { status: number | null; out: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw new Error(`promtool check metrics could not run (install the Debian package prometheus): ${r.error.message}`);
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Polls /readyz until it answers `status`; returns how long that took, or throws naming the step. */
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
  throw new Error(`${step}: /readyz did not answer ${status} within ${budgetMs} ms (last: ${last})`);
}

describe('controller metrics and health', () => {
  it('serves /healthz, /readyz and /metrics without a token', async () => {
    const h = await get('/healthz');
    expect(h.status).toBe(200);
    expect(JSON.parse(h.text)).toMatchObject({ status: 'ok' });
    const r = await get('/readyz');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toEqual({ ready: true, checks: { etcd: expect.objectContaining({ ok: true }), leader: expect.objectContaining({ ok: true }) } });
    const m = await get('/metrics');
    expect(m.status).toBe(200);
    expect(m.type).toMatch(/^text\/plain; version=0\.0\.4/);
    // /v1 keeps its token.
    expect((await get('/v1/nodes')).status).toBe(401);
  });

  it('counts allocations per pool and node, exactly, and passes promtool check metrics', async () => {
    const h1 = new FakeDockerHost(rpc, 'h1');
    const h2 = new FakeDockerHost(rpc, 'h2');
    const { poolId } = await h1.pool('198.18.4.0/24', { options: { block_size: '28' } });
    await h2.pool('198.18.4.0/24', { options: { block_size: '28' } });
    await h1.gateway(poolId);
    for (let i = 0; i < 5; i++) await h1.address(poolId, i);
    for (let i = 0; i < 3; i++) await h2.address(poolId, 100 + i);
    const text = (await get('/metrics')).text;
    const check = promtool(text);
    expect(check).toEqual({ status: 0, out: '' });
    const s = samples(text);
    const usage = (await (await fetch(`${base}/v1/ipam/usage`, { headers: { authorization: 'Bearer test-token-0123456789abcdef' } })).json()) as any;
    const pool = usage.pools.find((p: any) => p.poolId === poolId);
    const inUse = (node: string) => s.get(`underlay_ipam_addresses_in_use{pool="${poolId}",node="${node}"}`);
    expect(s.get(`underlay_ipam_pool_size_addresses{pool="${poolId}"}`)).toBe(Number(pool.size));
    expect(inUse('h1')).toBe(6); // the gateway and five endpoints
    expect(inUse('h2')).toBe(3);
    const blocks = (node: string) => pool.blocks.filter((b: any) => b.node === node).length;
    expect(s.get(`underlay_ipam_blocks{pool="${poolId}",node="h1"}`)).toBe(blocks('h1'));
    expect(s.get(`underlay_ipam_blocks{pool="${poolId}",node="h2"}`)).toBe(blocks('h2'));
    expect(s.get(`underlay_rpc_requests_total{method="requestAddress",result="ok"}`)).toBe(9);
    expect(s.get(`underlay_rpc_request_duration_seconds_count{method="requestAddress"}`)).toBe(9);
    expect(s.get('underlay_leader')).toBe(1);
    expect(s.get('underlay_leader_elections_won_total')).toBe(1);
    expect(s.get('underlay_event_log_head_seq')).toBe(c.writer.committedSeq);
    expect(s.get('underlay_commit_batch_events_sum')).toBeGreaterThan(0);
    expect(s.get('underlay_etcd_txn_duration_seconds_count')).toBeGreaterThan(0);
    expect(s.get('underlay_commit_failures_total')).toBe(0);
    expect(s.get('underlay_http_requests_total{route="/healthz",code="200"}')).toBe(1);
    expect(s.get('underlay_http_requests_total{route="/v1/nodes",code="401"}')).toBe(1);
  });

  it('answers OpenMetrics (with trace_id exemplars) when the scraper asks for it', async () => {
    const m = await get('/metrics', { accept: 'application/openmetrics-text; version=1.0.0,text/plain;q=0.5' });
    expect(m.type).toMatch(/^application\/openmetrics-text; version=1\.0\.0/);
    expect(m.text.endsWith('# EOF\n')).toBe(true);
    expect(m.text).toMatch(/underlay_rpc_request_duration_seconds_bucket\{[^}]*method="requestAddress"[^}]*\} \d+ # \{trace_id="[0-9a-f]{32}"\}/);
    // The text format still names counters with _total after an OpenMetrics render.
    expect((await get('/metrics')).text).toMatch(/^underlay_rpc_requests_total\{/m);
  });

  it('/readyz goes false when etcd stops and true again when it is back', async () => {
    const timings: string[] = [];
    process.kill(env.etcd.pid, 'SIGSTOP');
    try {
      const down = await readyzBecomes(503, NOT_READY_BUDGET_MS, 'etcd stopped (SIGSTOP)');
      timings.push(`false after ${down.ms} ms`);
      expect(down.body.ready).toBe(false);
      expect(down.body.checks.etcd.ok).toBe(false);
    } finally {
      process.kill(env.etcd.pid, 'SIGCONT');
    }
    const up = await readyzBecomes(200, READY_AGAIN_BUDGET_MS, 'etcd continued (SIGCONT)');
    timings.push(`true again after ${up.ms} ms`);
    process.stdout.write(`readyz timings: ${timings.join(', ')}\n`);
    expect(up.body.ready).toBe(true);
  });
});
