/**
 * The Docker Engine API adapter (libs/adapters/src/docker/engine.ts) against a small HTTP server on a unix socket:
 * answers are parsed once, in the adapter, into typed results; 404s become values; malformed answers throw.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { DockerEngine } from '@underlay/adapters';
import { ZodError } from 'zod';

const NET = 'a1'.repeat(32);
const inspect = {
  Name: 'lan',
  Id: NET,
  Driver: 'underlay',
  IPAM: { Driver: 'underlay', Options: null, Config: [{ Subnet: '192.0.2.0/24', Gateway: '192.0.2.1' }] },
  Options: { parent: 'eth1' },
  Labels: null,
  Containers: { c1: { Name: 'web', EndpointID: 'e1'.repeat(32), MacAddress: '02:42:c0:00:02:02', IPv4Address: '192.0.2.2/24', IPv6Address: '' } },
  Scope: 'local',
};

let dir: string;
let server: http.Server;
let docker: DockerEngine;
const seen: string[] = [];
let routes: Record<string, (body: string) => [number, unknown]> = {};

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-docker-'));
  const sock = path.join(dir, 'docker.sock');
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const key = `${req.method} ${req.url}`;
      seen.push(key);
      const [code, out] = routes[key]?.(body) ?? [404, { message: `no such route ${key}` }];
      const s = typeof out === 'string' ? out : JSON.stringify(out);
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(s);
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  docker = new DockerEngine(`unix://${sock}`);
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  fs.rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  seen.length = 0;
  routes = {};
});

const listPath = `/networks?filters=${encodeURIComponent(JSON.stringify({ driver: ['underlay'] }))}`;

describe('DockerEngine', () => {
  it('parses a network inspect into DockerNetworkInspect (defaults filled in), and answers undefined for 404', async () => {
    routes[`GET /networks/${NET}`] = () => [200, inspect];
    const n = await docker.inspectNetwork(NET);
    expect(n).toMatchObject({ Name: 'lan', Id: NET, Driver: 'underlay', EnableIPv6: false, Internal: false, Options: { parent: 'eth1' } });
    expect(n!.Containers!.c1!.EndpointID).toBe('e1'.repeat(32));
    expect(n).not.toHaveProperty('Scope');
    expect(await docker.networkName(NET)).toBe('lan');
    routes[`GET /networks/${NET}`] = () => [404, { message: `network ${NET} not found` }];
    expect(await docker.inspectNetwork(NET)).toBeUndefined();
    expect(await docker.networkName(NET)).toBeUndefined();
  });

  it('throws on an inspect answer that is not a network, and on errors other than 404', async () => {
    routes[`GET /networks/${NET}`] = () => [200, { Name: 'lan' }];
    await expect(docker.inspectNetwork(NET)).rejects.toBeInstanceOf(ZodError);
    routes[`GET /networks/${NET}`] = () => [500, { message: 'daemon is shutting down' }];
    await expect(docker.inspectNetwork(NET)).rejects.toThrow('daemon is shutting down');
  });

  it('lists networks parsed, and their ids skipping entries without one', async () => {
    routes[`GET ${listPath}`] = () => [200, [{ ...inspect, Containers: {} }, { Name: 'x', Driver: 'underlay' }]];
    expect(await docker.listNetworkIds('underlay')).toStrictEqual([NET]);
    await expect(docker.listNetworks('underlay')).rejects.toBeInstanceOf(ZodError);
    routes[`GET ${listPath}`] = () => [200, [{ ...inspect, Containers: {} }]];
    expect((await docker.listNetworks('underlay')).map((n) => [n.Name, n.Id, n.Internal])).toEqual([['lan', NET, false]]);
    routes[`GET ${listPath}`] = () => [200, { not: 'a list' }];
    await expect(docker.listNetworkIds('underlay')).rejects.toBeInstanceOf(ZodError);
  });

  it("creates a network answering its id, and deletes one (false when Docker had none)", async () => {
    let sent: unknown;
    routes['POST /networks/create'] = (b) => ((sent = JSON.parse(b)), [201, { Id: NET, Warning: '' }]);
    expect(await docker.createNetwork({ Name: 'lan', Driver: 'underlay' })).toBe(NET);
    expect(sent).toEqual({ Name: 'lan', Driver: 'underlay' });
    routes['POST /networks/create'] = () => [201, {}];
    await expect(docker.createNetwork({ Name: 'lan' })).rejects.toBeInstanceOf(ZodError);
    routes[`DELETE /networks/${NET}`] = () => [204, ''];
    expect(await docker.deleteNetwork(NET)).toBe(true);
    delete routes[`DELETE /networks/${NET}`];
    expect(await docker.deleteNetwork(NET)).toBe(false);
  });
});
