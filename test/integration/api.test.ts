/**
 * The controller's HTTP API on real etcd and NATS: bearer-token auth on every /v1 route, 400s naming
 * the wrong field, the network lifecycle (create, same again, different, remove), the views filled by
 * agents' RPCs and reports, the generated OpenAPI document, the event log (pages and a follow stream),
 * and a standby refusing writes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Controller } from '@underlay/controller';
import {
  ApiError,
  EndpointList,
  EventsPage,
  Health,
  VersionInfo,
  IpamCheck,
  IpamUsage,
  NetworkCreateResponse,
  NetworkDetail,
  NetworkList,
  NodeList,
  type ClusterEvent,
} from '@underlay/core';
import type { RpcClient } from '@underlay/adapters';
import { joinReplica, joinedReport, sendReport, startEnv, type Env } from './support';

jest.setTimeout(120_000);

const TOKEN = 'test-token-0123456789abcdef';
const AUTH = { authorization: `Bearer ${TOKEN}` };
let env: Env;
let leader: Controller;
let base: string;
let rpc: RpcClient;

const url = (c: Controller) => `http://127.0.0.1:${c.httpAddress!.port}`;

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = AUTH, to = base) {
  const res = await fetch(`${to}${path}`, {
    method,
    headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: text ? (JSON.parse(text) as any) : undefined };
}

beforeAll(async () => {
  env = await startEnv();
  leader = await env.controller({ apiToken: TOKEN });
  base = url(leader);
  rpc = await env.client();
});

afterAll(async () => {
  await env?.close();
});

const NET = { name: 'net1', options: { parent: 'eth1' }, subnets: [{ subnet: '198.18.0.0/24', gateway: '198.18.0.1', ipRange: '198.18.0.128/25' }], labels: { team: 'a' } };

describe('controller HTTP API', () => {
  it('GET /v1/version: the controller\'s version (the package\'s), with the token only', async () => {
    const r = await call('GET', '/v1/version');
    expect(r.status).toBe(200);
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '../../services/controller/package.json'), 'utf8')) as { version: string };
    expect(VersionInfo.parse(r.json)).toEqual({ version: pkg.version, api: 'v1', name: 'c1', role: 'leader' });
    expect((await call('GET', '/v1/version', undefined, {})).status).toBe(401);
  });

  it('serves /healthz without a token', async () => {
    const r = await call('GET', '/healthz', undefined, {});
    expect(r.status).toBe(200);
    expect(Health.parse(r.json)).toMatchObject({ ok: true, role: 'leader', name: 'c1' });
  });

  it('refuses every /v1 route without the token or with a wrong one, with a JSON error and WWW-Authenticate', async () => {
    const doc = (await call('GET', '/openapi.json', undefined, {})).json;
    const ops: [string, string][] = [];
    for (const [path, item] of Object.entries<Record<string, unknown>>(doc.paths)) {
      for (const method of Object.keys(item)) if (path.startsWith('/v1/')) ops.push([method.toUpperCase(), path.replace('{name}', 'net1')]);
    }
    expect(ops.length).toBeGreaterThanOrEqual(9);
    for (const [method, path] of [...ops, ['GET', '/v1/nothing-here']] as [string, string][]) {
      const body = method === 'POST' ? NET : undefined;
      const variants: Record<string, string>[] = [{}, { authorization: 'Bearer wrong-token-0123456789' }, { authorization: `Basic ${TOKEN}` }, { authorization: `Bearer ${TOKEN}x` }];
      for (const headers of variants) {
        const r = await call(method, path, body, headers);
        expect({ method, path, headers, status: r.status }).toEqual({ method, path, headers, status: 401 });
        expect(r.headers.get('www-authenticate')).toMatch(/^Bearer realm="underlay"/);
        expect(ApiError.parse(r.json).error.code).toBe('unauthorized');
      }
    }
    // Nothing was created by the refused POSTs.
    expect((await call('GET', '/v1/networks')).json.networks).toEqual([]);
  });

  it('answers 400 naming the wrong field for malformed bodies', async () => {
    const bad = async (body: unknown, field: string | undefined, text: RegExp) => {
      const r = await call('POST', '/v1/networks', body);
      expect(r.status).toBe(400);
      const e = ApiError.parse(r.json).error;
      expect(e.code).toBe('invalid-argument');
      expect(e.field).toBe(field);
      expect(e.message).toMatch(text);
    };
    await bad('{"name": "net1", "subnets": [', undefined, /not valid JSON/);
    await bad('', undefined, /needs a JSON body/);
    await bad({ name: 'net1' }, 'subnets', /^subnets: is required/);
    await bad({ name: 'net1', subnets: [] }, 'subnets', /^subnets: a network needs at least one --subnet/);
    await bad({ name: 'net1', subnets: [{ subnet: '198.18.0.0/33' }] }, 'subnets.0.subnet', /^subnets\.0\.subnet: invalid CIDR: "198\.18\.0\.0\/33"/);
    await bad({ name: 'net1', subnets: [{ subnet: '198.18.0.5/24' }] }, 'subnets.0.subnet', /host bits are set; did you mean 198\.18\.0\.0\/24/);
    await bad({ name: 'net1', subnets: [{ subnet: '198.18.0.0/24', gateway: 'gw' }] }, 'subnets.0.gateway', /^subnets\.0\.gateway: invalid IP address/);
    await bad({ name: 'net1', subnets: [{ subnet: 42 }] }, 'subnets.0.subnet', /^subnets\.0\.subnet: expected string, received number/);
    await bad({ name: 'net1', subnets: [{ subnet: '198.18.0.0/24' }], ipv6: 'yes' }, 'ipv6', /^ipv6: expected boolean/);
    await bad({ name: 'net1', subnets: [{ subnet: '198.18.0.0/24' }], options: { parent: 7 } }, 'options.parent', /^options\.parent: expected string/);
    await bad({ name: '-bad', subnets: [{ subnet: '198.18.0.0/24' }] }, 'name', /^name: a network name starts with a letter or digit/);
    await bad({ name: 'net1', subnet: '198.18.0.0/24', subnets: [{ subnet: '198.18.0.0/24' }] }, 'subnet', /^subnet: unknown field/);
    await bad({ name: 'net1', subnets: [{ subnet: '198.18.0.0/24' }], options: { macvlan_mode: 'nope' } }, 'options', /^options: requested macvlan mode 'nope' is not valid/);
    await bad({ name: 'net1', subnets: [{ subnet: '2001:db8::/64' }] }, 'subnets', /set ipv6 to true/);
    await bad([1, 2], undefined, /expected object, received array/);
    // Query strings too.
    const q = await call('GET', '/v1/events?since=-1');
    expect(q.status).toBe(400);
    expect(q.json.error).toMatchObject({ field: 'since', message: 'since: must be a whole number ≥ 0' });
    expect((await call('GET', '/v1/events?limit=0')).json.error.field).toBe('limit');
    for (const t of ['xyz', '0'.repeat(32), 'A'.repeat(32)]) {
      const tq = await call('GET', `/v1/events?trace=${t}`);
      expect(tq.status).toBe(400);
      expect(tq.json.error).toMatchObject({ field: 'trace', message: 'trace: must be a W3C trace id: 32 lowercase hex digits, not all zeros' });
    }
    expect((await call('GET', '/v1/networks/-x')).json.error.field).toBe('name');
  });

  it('refuses bodies over 1 MiB with 413, unknown paths with 404 and wrong methods with 405', async () => {
    const big = JSON.stringify({ name: 'big', subnets: [{ subnet: '198.18.9.0/24' }], labels: { x: 'y'.repeat(1_100_000) } });
    const r = await call('POST', '/v1/networks', big);
    expect(r.status).toBe(413);
    expect(r.json.error.code).toBe('payload-too-large');
    expect((await call('GET', '/v1/pools')).status).toBe(404);
    expect((await call('GET', '/nope', undefined, {})).status).toBe(404);
    const m = await call('PUT', '/v1/networks/net1', {});
    expect(m.status).toBe(405);
    expect(m.headers.get('allow')).toBe('GET, DELETE');
    expect(m.json.error.code).toBe('method-not-allowed');
    expect((await call('POST', '/healthz', {}, {})).status).toBe(405);
  });

  it('creates, lists, inspects, re-creates (200), refuses a different definition (409), removes (204) a network', async () => {
    const c = await call('POST', '/v1/networks', NET, { ...AUTH, 'x-underlay-user': 'alice' });
    expect(c.status).toBe(201);
    expect(c.headers.get('location')).toBe('/v1/networks/net1');
    const created = NetworkCreateResponse.parse(c.json);
    expect(created.created).toBe(true);
    expect(created.network).toMatchObject({ name: 'net1', driver: 'macvlan', mode: 'bridge', parent: 'eth1', subnets: ['198.18.0.0/24'], endpointCount: 0 });
    // The actor is the name of the token (--api-token: api); X-Underlay-User is not trusted.
    expect(created.network.created.actor).toBe('user:api');

    const list = NetworkList.parse((await call('GET', '/v1/networks')).json);
    expect(list.networks.map((n) => n.name)).toEqual(['net1']);

    const i = await call('GET', '/v1/networks/net1');
    expect(i.status).toBe(200);
    const d = NetworkDetail.parse(i.json);
    expect(d.definition).toEqual({
      options: { parent: 'eth1' },
      ipamOptions: {},
      subnets: [{ subnet: '198.18.0.0/24', gateway: '198.18.0.1', ipRange: '198.18.0.128/25', auxAddresses: {} }],
      ipv6: false,
      internal: false,
      labels: { team: 'a' },
    });

    const again = await call('POST', '/v1/networks', NET);
    expect(again.status).toBe(200);
    expect(NetworkCreateResponse.parse(again.json).created).toBe(false);

    const diff = await call('POST', '/v1/networks', { ...NET, options: { parent: 'eth2' }, subnets: [{ subnet: '198.18.0.0/24', gateway: '198.18.0.254' }] });
    expect(diff.status).toBe(409);
    expect(diff.json.error.code).toBe('conflict');
    expect(diff.json.error.message).toContain('network net1 already exists with a different definition');
    expect(diff.json.error.message).toContain('option parent: cluster has "eth1", this one has "eth2"');
    expect(diff.json.error.message).toContain('subnet 198.18.0.0/24 gateway: cluster has "198.18.0.1", this one has "198.18.0.254"');

    const overlap = await call('POST', '/v1/networks', { name: 'other', subnets: [{ subnet: '198.18.0.128/25' }] });
    expect(overlap.status).toBe(409);
    expect(overlap.json.error.message).toContain('overlaps with 198.18.0.0/24 of network "net1" (on ');

    expect((await call('DELETE', '/v1/networks/net1')).status).toBe(204);
    const gone = await call('GET', '/v1/networks/net1');
    expect(gone.status).toBe(404);
    expect(gone.json.error).toEqual({ code: 'not-found', message: 'network net1 not found' });
    expect((await call('DELETE', '/v1/networks/net1')).status).toBe(404);
    expect(NetworkList.parse((await call('GET', '/v1/networks')).json).networks).toEqual([]);
  });

  it('shows what agents report: hosts, endpoints with their containers, nodes, IPAM usage; refuses removal while attached', async () => {
    const def = { options: { parent: 'eth1' }, subnets: [{ subnet: '198.18.4.0/24', gateway: '198.18.4.1' }] };
    expect((await call('POST', '/v1/networks', { name: 'web', ...def })).status).toBe(201);
    // What h1's agent does when it makes its replica and a container joins.
    const h1 = { node: 'h1', networkId: 'nid-h1', name: 'web' };
    const ep = 'e'.repeat(64);
    const { named, address, cidr } = await joinReplica(rpc, h1, def, { requestId: 'req-1', endpointId: ep });
    expect(named).toMatchObject({ member: true });
    expect(named.conflict).toBeUndefined();
    await sendReport(rpc, joinedReport(h1, ep, cidr));

    const eps = EndpointList.parse((await call('GET', '/v1/endpoints')).json).endpoints;
    expect(eps).toEqual([expect.objectContaining({ address, node: 'h1', container: 'nginx-1', network: 'web', state: 'joined', endpointId: ep })]);
    expect(EndpointList.parse((await call('GET', '/v1/endpoints?node=h2')).json).endpoints).toEqual([]);

    const web = NetworkDetail.parse((await call('GET', '/v1/networks/web')).json);
    expect(web).toMatchObject({ endpointCount: 1, readyHosts: 1, totalHosts: 1, hosts: [{ node: 'h1', nodeReady: true, state: 'ready', replica: true }] });
    expect(web.endpoints.map((e) => e.container)).toEqual(['nginx-1']);

    const nodes = NodeList.parse((await call('GET', '/v1/nodes')).json).nodes;
    expect(nodes).toEqual([expect.objectContaining({ name: 'h1', status: 'Ready', address: '203.0.113.1', version: '0.1.0', endpointCount: 1, interfaces: ['eth0', 'eth1'] })]);

    const usage = IpamUsage.parse((await call('GET', '/v1/ipam/usage')).json);
    expect(usage.pools).toEqual([expect.objectContaining({ cidr: '198.18.4.0/24', used: 2, endpoints: 1, reserved: 1, size: '254', networks: ['web'], nodes: ['h1'] })]);
    expect(usage.pools[0]!.blocks).toEqual([{ block: '198.18.4.0/26', node: 'h1', size: '63', used: 2, endpoints: 1 }]);

    // The IPAM check: the one endpoint is h1's report's (new: pending or judged, never a finding).
    const checked = IpamCheck.parse((await call('GET', '/v1/ipam/check')).json);
    expect(checked).toMatchObject({ clean: true, findings: 0, nodes: { ready: ['h1'], notReady: [] }, allocationsWithoutContainer: [], containersWithoutAllocation: [] });
    expect((await call('GET', '/v1/ipam/check', undefined, {})).status).toBe(401);
    // An operator's release of it is refused (409), naming the container and its host; an unknown address is a 404.
    const refused = await call('POST', '/v1/ipam/release', { address });
    expect(refused.status).toBe(409);
    expect(refused.json.error.message).toContain(`address ${address} of network "web" is in use by container nginx-1 on h1`);
    expect((await call('POST', '/v1/ipam/release', { address: '198.18.4.250' })).json.error).toEqual({ code: 'not-found', message: 'address 198.18.4.250 is not allocated' });
    expect((await call('POST', '/v1/ipam/release', { address, extra: 1 })).status).toBe(400);

    const raw = await call('GET', '/v1/ipam');
    expect(raw.status).toBe(200);
    expect(raw.json.pools.map((p: { cidr: string }) => p.cidr)).toEqual(['198.18.4.0/24']);

    const rm = await call('DELETE', '/v1/networks/web');
    expect(rm.status).toBe(409);
    expect(rm.json.error.message).toContain(`network web has active endpoints on h1: container nginx-1 (${address})`);
  });

  it('serves an OpenAPI 3.1 document generated from the schemas, listing every path', async () => {
    const r = await call('GET', '/openapi.json', undefined, {});
    expect(r.status).toBe(200);
    const doc = r.json;
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
    expect(Object.keys(doc.paths).sort()).toEqual(['/healthz', '/metrics', '/openapi.json', '/readyz', '/v1/endpoints', '/v1/events', '/v1/ipam', '/v1/ipam/check', '/v1/ipam/release', '/v1/ipam/usage', '/v1/networks', '/v1/networks/{name}', '/v1/nodes', '/v1/version']);
    expect(Object.keys(doc.paths['/v1/networks']).sort()).toEqual(['get', 'post']);
    expect(Object.keys(doc.paths['/v1/networks/{name}']).sort()).toEqual(['delete', 'get']);
    expect(doc.components.securitySchemes.bearerAuth).toEqual(expect.objectContaining({ type: 'http', scheme: 'bearer' }));
    expect(doc.security).toEqual([{ bearerAuth: [] }]);
    expect(doc.paths['/healthz'].get.security).toEqual([]);
    expect(doc.paths['/v1/nodes'].get.security).toBeUndefined();
    const schemas = doc.components.schemas;
    for (const s of ['NetworkCreateRequest', 'NetworkCreateResponse', 'NetworkList', 'NetworkDetail', 'EndpointList', 'NodeList', 'IpamUsage', 'IpamCheck', 'IpamReleaseRequest', 'IpamReleaseResponse', 'EventsPage', 'ClusterEvent', 'ApiError', 'Health']) expect(schemas[s]).toBeDefined();
    // The request body as accepted: defaults optional, subnets required, unknown fields refused.
    expect(schemas.NetworkCreateRequest.required.sort()).toEqual(['name', 'subnets']);
    expect(schemas.NetworkCreateRequest.additionalProperties).toBe(false);
    expect(schemas.NetworkCreateRequest.properties.name.pattern).toBe('^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$');
    expect(schemas.NodeView.properties.status.enum).toEqual(['Ready', 'NotReady']);
    expect(doc.paths['/v1/networks'].post.requestBody.content['application/json'].schema).toEqual({ $ref: '#/components/schemas/NetworkCreateRequest' });
    expect(doc.paths['/v1/networks'].post.responses['201'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/NetworkCreateResponse' });
    expect(doc.paths['/v1/events'].get.parameters.map((p: { name: string }) => p.name)).toEqual(['since', 'limit', 'follow', 'trace']);
    expect(doc.paths['/v1/events'].get.responses['200'].content['application/x-ndjson']).toBeDefined();
    // Every $ref points at a component that exists.
    const refs: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) k === '$ref' ? refs.push(x as string) : walk(x);
    };
    walk(doc);
    expect(refs.length).toBeGreaterThan(20);
    for (const ref of refs) expect(schemas[ref.replace('#/components/schemas/', '')]).toBeDefined();
  });

  it('pages through the event log and streams new events with follow=true', async () => {
    const all = EventsPage.parse((await call('GET', '/v1/events?since=0&limit=10000')).json);
    const head = all.events.length;
    expect(all.events.map((e) => e.seq)).toEqual(Array.from({ length: head }, (_, i) => i + 1));
    expect(all.next).toBe(head);
    const page = EventsPage.parse((await call('GET', '/v1/events?since=2&limit=3')).json);
    expect(page.events.map((e) => e.seq)).toEqual([3, 4, 5]);
    expect(page.next).toBe(5);
    expect(EventsPage.parse((await call('GET', `/v1/events?since=${head}`)).json)).toEqual({ events: [], next: head });

    // trace=ID: only that trace's events, filtered by the controller; `next` is the last event read (matched or not).
    const traced = all.events.find((e) => e.traceId)!;
    const same = all.events.filter((e) => e.traceId === traced.traceId);
    expect(EventsPage.parse((await call('GET', `/v1/events?trace=${traced.traceId}`)).json)).toEqual({ events: same, next: head });
    expect(EventsPage.parse((await call('GET', `/v1/events?trace=${traced.traceId}&limit=1`)).json)).toEqual({ events: [same[0]], next: same[0]!.seq });
    expect(EventsPage.parse((await call('GET', `/v1/events?trace=${'f'.repeat(32)}&since=1`)).json)).toEqual({ events: [], next: head });
    // ...and in a follow stream.
    const tracedStream = await fetch(`${base}/v1/events?since=0&follow=true&trace=${traced.traceId}`, { headers: AUTH, signal: AbortSignal.timeout(1_500) });
    let tracedText = '';
    try {
      for await (const chunk of tracedStream.body as unknown as AsyncIterable<Uint8Array>) tracedText += Buffer.from(chunk).toString();
    } catch {
      /* the timeout ends it */
    }
    expect(tracedText.trimEnd().split('\n').map((l) => (JSON.parse(l) as ClusterEvent).seq)).toEqual(same.map((e) => e.seq));

    // follow: the stream first sends what is after `since`, then each new event.
    const ac = new AbortController();
    const res = await fetch(`${base}/v1/events?since=${head - 1}&follow=true`, { headers: AUTH, signal: ac.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
    const got: ClusterEvent[] = [];
    const reader = (async () => {
      let buf = '';
      const dec = new TextDecoder();
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          buf += dec.decode(chunk, { stream: true });
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            got.push(JSON.parse(buf.slice(0, nl)));
            buf = buf.slice(nl + 1);
          }
        }
      } catch {
        /* aborted */
      }
    })();
    const until = async (ok: () => boolean, what: string) => {
      const end = Date.now() + 10_000;
      while (!ok()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(got.map((e) => e.seq))}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await until(() => got.length === 1, 'the last event');
    expect(got[0]!.seq).toBe(head);
    expect((await call('POST', '/v1/networks', { name: 'streamed', subnets: [{ subnet: '198.18.8.0/24' }] })).status).toBe(201);
    await until(() => got.some((e) => e.type === 'ClusterNetworkCreated' && e.data.name === 'streamed'), 'the new event on the stream');
    expect(got.map((e) => e.seq)).toEqual([head, head + 1]);
    // The stream polls the log while the client is there, and stops when it goes.
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const reads = jest.spyOn(leader.log, 'readAll');
    try {
      await sleep(800);
      expect(reads.mock.calls.length).toBeGreaterThanOrEqual(2);
      ac.abort();
      await reader;
      await sleep(400);
      const after = reads.mock.calls.length;
      await sleep(1000);
      expect(reads.mock.calls.length).toBe(after);
    } finally {
      reads.mockRestore();
    }
  });

  it('lets a standby serve reads but answers 503 to writes', async () => {
    const standby = new Controller({ etcd: [env.etcd.url], nats: env.nats.url, listen: '127.0.0.1:0', name: 'standby', apiToken: TOKEN });
    env.controllers.push(standby);
    await standby.start();
    const sb = url(standby);
    expect((await call('GET', '/healthz', undefined, {}, sb)).json.role).toBe('standby');
    const w = await call('POST', '/v1/networks', { name: 'nope', subnets: [{ subnet: '198.18.12.0/24' }] }, AUTH, sb);
    expect(w.status).toBe(503);
    expect(w.json.error.code).toBe('unavailable');
    expect(w.json.error.message).toContain('standby');
    expect((await call('DELETE', '/v1/networks/streamed', undefined, AUTH, sb)).status).toBe(503);
    expect((await call('GET', '/v1/networks/streamed', undefined, {}, sb)).status).toBe(401);
    // The standby follows the log: its views show the leader's networks.
    const end = Date.now() + 10_000;
    let names: string[] = [];
    while (Date.now() < end) {
      names = NetworkList.parse((await call('GET', '/v1/networks', undefined, AUTH, sb)).json).networks.map((n) => n.name);
      if (names.includes('streamed')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(names).toEqual(['streamed', 'web']);
  });
});
