/**
 * Paging of the API's growing lists on real etcd and NATS: GET /v1/endpoints, /v1/networks/{name} (its endpoints)
 * and /v1/ipam/usage (the blocks) walked page by page with a small `limit` and `continue` give every row exactly
 * once and in the order of one big page; a bad `limit` or `continue` is a 400 naming it; and the compiled CLI
 * (endpoint ls, network inspect, ipam usage) shows every row past one page, with --json in the shape the API had
 * before it paged (no `continue`, all rows).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ApiError, BindEndpointRes, EndpointList, IpamUsage, NetworkDetail, PAGE_MAX, RequestAddressRes, type EndpointView } from '@underlay/core';
import type { RpcClient } from '@underlay/adapters';
import type { Controller } from '@underlay/controller';
import { joinReplica, startEnv, windowed, type Env } from './support';
import { CLI, ensureBuilt } from '../e2e/support/cluster';

jest.setTimeout(180_000);

const TOKEN = 'paging-test-token-0123456789';
const AUTH = { authorization: `Bearer ${TOKEN}` };
/** Nodes, each with its own block of `big`, and the endpoints each binds (one of them through joinReplica). */
const NODES = 6;
const PER_NODE = 10;
const BIG = { options: { parent: 'eth1' }, subnets: [{ subnet: '198.18.16.0/22', gateway: '198.18.16.1' }] };
const OTHER = { options: { parent: 'eth2' }, subnets: [{ subnet: '198.18.32.0/24', gateway: '198.18.32.1' }] };

let env: Env;
let controller: Controller;
let base: string;
let tokenFile: string;
let rpc: RpcClient;

async function get(p: string) {
  const res = await fetch(`${base}${p}`, { headers: AUTH });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as any) : undefined };
}

/** Every page of `p` with `limit`, following `continue`; the pages as they came (at most 1,000, so a bug cannot loop). */
async function walk(p: string, limit: number): Promise<any[]> {
  const pages: any[] = [];
  let token: string | undefined;
  do {
    const q = new URLSearchParams({ limit: String(limit), ...(token ? { continue: token } : {}) });
    const r = await get(`${p}${p.includes('?') ? '&' : '?'}${q}`);
    expect({ p, status: r.status }).toEqual({ p, status: 200 });
    pages.push(r.json);
    token = r.json.continue;
  } while (token && pages.length < 1_000);
  return pages;
}

const rowId = (e: EndpointView) => `${e.node}/${e.endpointId}/${e.address}`;

function cli(args: string[], extra: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const e: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('UNDERLAY_')) e[k] = v;
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...e, UNDERLAY_CONTROLLER: base, UNDERLAY_TOKEN_FILE: tokenFile, ...extra }, timeout: 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

async function cliOk(args: string[], extra: Record<string, string> = {}): Promise<string> {
  const r = await cli(args, extra);
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: '' });
  return r.stdout;
}

beforeAll(async () => {
  await ensureBuilt();
  env = await startEnv();
  tokenFile = path.join(env.dir, 'api-token');
  fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  controller = await env.controller({ apiTokenFile: tokenFile });
  base = `http://127.0.0.1:${controller.httpAddress!.port}`;
  rpc = await env.client();
  for (const [name, def] of [['big', BIG], ['other', OTHER]] as const) {
    const r = await fetch(`${base}/v1/networks`, { method: 'POST', headers: { ...AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ name, ...def }) });
    expect(r.status).toBe(201);
  }
  // Every node makes its replica of big and binds PER_NODE endpoints; h1 has one endpoint on other too.
  await windowed(NODES, NODES, async (n) => {
    const node = `h${n + 1}`;
    const replica = { node, networkId: `nid-big-${node}`, name: 'big' };
    const first = await joinReplica(rpc, replica, BIG, { requestId: `${node}-0`, endpointId: `${node}`.padEnd(64, '0') });
    await windowed(PER_NODE - 1, 3, async (i) => {
      const a = await rpc.call('requestAddress', { node, poolId: first.poolId, address: '', options: {}, requestId: `${node}-${i + 1}`, kind: 'endpoint' }, RequestAddressRes);
      const endpointId = `${node}e${i + 1}`.padEnd(64, 'f');
      await rpc.call('bindEndpoint', { node, poolId: first.poolId, address: a.address.split('/')[0]!, allocSeq: a.allocSeq, endpointId, networkId: replica.networkId }, BindEndpointRes);
    });
  });
  await joinReplica(rpc, { node: 'h1', networkId: 'nid-other-h1', name: 'other' }, OTHER, { requestId: 'o-0', endpointId: 'o'.padEnd(64, '1') });
}, 180_000);

afterAll(async () => {
  await env?.close();
});

describe('paged read paths', () => {
  it('GET /v1/endpoints: small pages walked with continue give every row once, in the order of one page', async () => {
    const whole = EndpointList.parse((await get(`/v1/endpoints?limit=${PAGE_MAX}`)).json);
    expect(whole.continue).toBeUndefined();
    expect(whole.endpoints).toHaveLength(NODES * PER_NODE + 1);
    for (const limit of [1, 7, NODES * PER_NODE]) {
      const pages = (await walk('/v1/endpoints', limit)).map((j) => EndpointList.parse(j));
      const rows = pages.flatMap((p) => p.endpoints);
      expect(pages).toHaveLength(Math.ceil(whole.endpoints.length / limit));
      expect(pages.slice(0, -1).every((p) => p.endpoints.length === limit && typeof p.continue === 'string')).toBe(true);
      expect(pages.at(-1)!.continue).toBeUndefined();
      expect(new Set(rows.map(rowId)).size).toBe(rows.length);
      expect(rows).toEqual(whole.endpoints);
    }
    // Sorted by network, then address.
    const big = whole.endpoints.filter((e) => e.network === 'big').map((e) => (e.address ?? '').split('.').map(Number).reduce((a, b) => a * 256 + b, 0));
    expect(big).toEqual([...big].sort((a, b) => a - b));
    // A filter pages the filtered rows; the token goes with the same filter.
    const h2 = (await walk('/v1/endpoints?node=h2', 3)).flatMap((j) => EndpointList.parse(j).endpoints);
    expect(h2).toEqual(whole.endpoints.filter((e) => e.node === 'h2'));
    expect(h2).toHaveLength(PER_NODE);
  });

  it('GET /v1/networks/{name}: its endpoints page the same way, the network the same on every page', async () => {
    const whole = NetworkDetail.parse((await get(`/v1/networks/big?limit=${PAGE_MAX}`)).json);
    expect(whole.endpoints).toHaveLength(NODES * PER_NODE);
    const pages = (await walk('/v1/networks/big', 4)).map((j) => NetworkDetail.parse(j));
    expect(pages).toHaveLength(Math.ceil((NODES * PER_NODE) / 4));
    expect(pages.flatMap((p) => p.endpoints)).toEqual(whole.endpoints);
    for (const p of pages) expect({ ...p, endpoints: [], continue: undefined }).toEqual({ ...whole, endpoints: [], continue: undefined });
  });

  it('GET /v1/ipam/usage: the blocks of all pools page in order, every pool with its counts on every page', async () => {
    const whole = IpamUsage.parse((await get(`/v1/ipam/usage?limit=${PAGE_MAX}`)).json);
    const blocks = whole.pools.flatMap((p) => p.blocks.map((b) => `${p.poolId} ${b.block}`));
    expect(blocks.length).toBeGreaterThanOrEqual(NODES + 1);
    expect(whole.pools.map((p) => p.blockCount)).toEqual(whole.pools.map((p) => p.blocks.length));
    const pages = (await walk('/v1/ipam/usage', 2)).map((j) => IpamUsage.parse(j));
    expect(pages).toHaveLength(Math.ceil(blocks.length / 2));
    expect(pages.flatMap((pg) => pg.pools.flatMap((p) => p.blocks.map((b) => `${p.poolId} ${b.block}`)))).toEqual(blocks);
    for (const pg of pages) expect(pg.pools.map(({ blocks: _b, ...p }) => p)).toEqual(whole.pools.map(({ blocks: _b, ...p }) => p));
  });

  it('refuses a bad limit or continue with a 400 that names it', async () => {
    const bad = async (p: string, field: string, text: RegExp) => {
      const r = await get(p);
      expect({ p, status: r.status }).toEqual({ p, status: 400 });
      const e = ApiError.parse(r.json).error;
      expect(e.code).toBe('invalid-argument');
      expect(e.field).toBe(field);
      expect(e.message).toMatch(text);
    };
    for (const p of ['/v1/endpoints', '/v1/networks/big', '/v1/ipam/usage']) {
      await bad(`${p}?limit=0`, 'limit', /^limit: must be a whole number from 1 to 10000/);
      await bad(`${p}?limit=${PAGE_MAX + 1}`, 'limit', /^limit: must be a whole number from 1 to 10000/);
      await bad(`${p}?limit=ten`, 'limit', /^limit: must be a whole number from 1 to 10000/);
      await bad(`${p}?continue=${encodeURIComponent('not a token!')}`, 'continue', /^continue: not a token this API made \(pass the `continue` of the previous page unchanged\)/);
      await bad(`${p}?continue=${Buffer.from('{"a":1}').toString('base64url')}`, 'continue', /^continue: not a token this API made/);
    }
  });

  it('the CLI shows every row past one page: endpoint ls, network inspect, ipam usage (tables and --json as before paging)', async () => {
    const whole = EndpointList.parse((await get(`/v1/endpoints?limit=${PAGE_MAX}`)).json).endpoints;
    // --json: the whole list, no continue, read 7 rows a request (UNDERLAY_PAGE_SIZE) or 5 (--page-size).
    expect(JSON.parse(await cliOk(['endpoint', 'ls', '--json'], { UNDERLAY_PAGE_SIZE: '7' }))).toEqual({ endpoints: JSON.parse(JSON.stringify(whole)) });
    expect(JSON.parse(await cliOk(['endpoint', 'ls', '--json', '--page-size', '5', '--network', 'big'])).endpoints).toHaveLength(NODES * PER_NODE);
    // The table: a header and one line per endpoint; -q the addresses in order.
    expect((await cliOk(['endpoint', 'ls'], { UNDERLAY_PAGE_SIZE: '7' })).trimEnd().split('\n')).toHaveLength(whole.length + 1);
    expect((await cliOk(['endpoint', 'ls', '-q', '--page-size', '3'])).trimEnd().split('\n')).toEqual(whole.map((e) => e.address));

    const net = NetworkDetail.parse((await get(`/v1/networks/big?limit=${PAGE_MAX}`)).json);
    const inspected = JSON.parse(await cliOk(['network', 'inspect', 'big', '--json', '--page-size', '4']));
    expect(inspected.continue).toBeUndefined();
    expect(NetworkDetail.parse(inspected)).toEqual(net);
    const text = await cliOk(['network', 'inspect', 'big', '--page-size', '4']);
    for (const e of net.endpoints) expect(text).toContain(e.address);

    const usage = (await get(`/v1/ipam/usage?limit=${PAGE_MAX}`)).json;
    expect(JSON.parse(await cliOk(['ipam', 'usage', '--json', '--page-size', '2']))).toEqual(usage);
    const table = await cliOk(['ipam', 'usage'], { UNDERLAY_PAGE_SIZE: '1' });
    // A line per pool and one per block, in order.
    const lines = table.trimEnd().split('\n').slice(1).map((l) => l.trim().split(/\s+/)[0]);
    expect(lines).toEqual(IpamUsage.parse(usage).pools.flatMap((p) => [p.cidr, ...p.blocks.map((b) => b.block)]));

    // A page size the API would refuse is the CLI's usage error (exit 2), naming the flag.
    for (const [args, extra] of [[['endpoint', 'ls', '--page-size', '0'], {}], [['ipam', 'usage'], { UNDERLAY_PAGE_SIZE: '10001' }]] as const) {
      const r = await cli([...args], extra);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('--page-size (or UNDERLAY_PAGE_SIZE): must be a whole number from 1 to 10000');
    }
  });
});
