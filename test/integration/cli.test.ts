/**
 * The compiled `underlay` CLI against a live controller (real etcd and NATS): network ls/inspect/
 * create/rm, endpoint ls (an endpoint bound through RPC, its container named by the node's report),
 * node ls (Ready, then NotReady once the lease runs out), ipam usage, events (--since, --follow, the TRACE
 * column), trace ID (the events of requests made with a known traceparent), tables and --json, and the messages
 * and exit codes when the controller cannot be reached or refuses the token.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import {
  EmptyRes,
  EndpointList,
  IpamUsage,
  NetworkCreateResponse,
  NetworkDetail,
  NetworkList,
  NodeList,
  RequestAddressRes,
  type ClusterEvent,
  type NodeReport,
} from '@underlay/core';
import type { RpcClient } from '@underlay/adapters';
import type { Controller } from '@underlay/controller';
import { joinReplica, joinedReport, spawnCollecting, startEnv, type Env } from './support';
import { CLI, ensureBuilt } from '../e2e/support/cluster';
import { waitFor } from '../lab/wait';
import { parse as parseYaml } from 'yaml';

jest.setTimeout(180_000);

const TOKEN = 'cli-test-token-0123456789';
const LEASE_MS = 5_000;

let env: Env;
let controller: Controller;
let base: string;
let tokenFile: string;
let rpc: RpcClient;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of a CLI run: ours, less any UNDERLAY_* of the test host, plus `extra`. */
function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('UNDERLAY_')) e[k] = v;
  return { ...e, ...extra };
}

function cli(args: string[], extra: Record<string, string> = { UNDERLAY_CONTROLLER: base, UNDERLAY_TOKEN_FILE: tokenFile }): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: cliEnv(extra), timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

/**
 * A CLI run that sees its own /var/lib: a tmpfs in a private mount namespace (`unshare --mount`), holding only
 * `files` (paths under /var/lib). So the default token file (/var/lib/underlay/api-token, what `underlay up`
 * writes) is what the test puts there, whatever this machine has. Root may mount directly; anyone else gets a
 * user namespace mapping them to root (`--map-root-user`).
 */
function cliWithVarLib(args: string[], extra: Record<string, string>, files: Record<string, { text: string; mode: number }>): Promise<Run> {
  const asRoot = process.getuid?.() === 0;
  const setup = [
    'set -e',
    'mount -t tmpfs -o mode=0755 tmpfs /var/lib',
    ...Object.entries(files).flatMap(([f, { text, mode }]) => [
      `mkdir -p "$(dirname /var/lib/${f})"`,
      `printf '%s' '${text.replace(/'/g, `'\\''`)}' > /var/lib/${f}`,
      `chmod ${mode.toString(8)} /var/lib/${f}`,
    ]),
    'exec "$@"',
  ].join('\n');
  const unshare = ['unshare', ...(asRoot ? [] : ['--user', '--map-root-user']), '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', setup, 'cli'];
  return new Promise((resolve) => {
    execFile(unshare[0]!, [...unshare.slice(1), process.execPath, CLI, ...args], { env: cliEnv(extra), timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

/** A long-running CLI command (events --follow) with the token in its environment; its output collected. */
function follow(args: string[]) {
  return spawnCollecting(process.execPath, [CLI, ...args], cliEnv({ UNDERLAY_CONTROLLER: base, UNDERLAY_TOKEN: TOKEN }));
}

async function ok(args: string[]): Promise<string> {
  const r = await cli(args);
  if (r.code !== 0) throw new Error(`underlay ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** A table as header names → cells per row (columns are two or more spaces apart). */
function parseTable(text: string): Record<string, string>[] {
  const [head, ...rows] = text.trimEnd().split('\n');
  const starts: number[] = [];
  const names: string[] = [];
  for (const m of head!.matchAll(/\S+(?: \S+)*/g)) {
    starts.push(m.index!);
    names.push(m[0]);
  }
  return rows.map((row) => Object.fromEntries(names.map((n, i) => [n, row.slice(starts[i], starts[i + 1]).trim()])));
}

const EP = 'a1b2c3d4e5f6'.padEnd(64, '7');
let address: string;

const H1 = { node: 'h1', networkId: 'nid-h1', name: 'web' };

function report(extra: Partial<NodeReport> = {}): NodeReport {
  return joinedReport(H1, EP, `${address}/24`, extra);
}

beforeAll(async () => {
  await ensureBuilt();
  env = await startEnv();
  tokenFile = path.join(env.dir, 'api-token');
  fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  controller = await env.controller({ apiTokenFile: tokenFile, nodeLeaseMs: LEASE_MS });
  base = `http://127.0.0.1:${controller.httpAddress!.port}`;
  rpc = await env.client();
}, 180_000);

afterAll(async () => {
  await env?.close();
});

describe('underlay CLI against a live controller', () => {
  it('network ls starts empty (a header only)', async () => {
    expect(await ok(['network', 'ls'])).toBe('NAME   MODE   PARENT   SUBNETS   HOSTS   ENDPOINTS   CREATED\n');
    expect(JSON.parse(await ok(['network', 'ls', '--json']))).toEqual({ networks: [] });
  });

  it('network create takes docker-like flags; same again is fine, a different definition is refused with the difference', async () => {
    const args = ['network', 'create', 'web', '--subnet', '198.18.4.0/24', '--gateway', '198.18.4.1', '--ip-range', '198.18.4.128/25', '-o', 'parent=eth1', '--opt', 'macvlan_mode=bridge', '--label', 'team=a', '--label', 'tier=front', '--aux-address', 'printer=198.18.4.10', '--ipam-opt', 'block_size=27'];
    const first = await cli(args);
    expect(first).toEqual({ code: 0, stdout: 'web\n', stderr: '' });
    const again = await cli(args);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('web\n');
    expect(again.stderr).toContain('network web already exists with this definition');
    const diff = await cli(['network', 'create', 'web', '--subnet', '198.18.4.0/24', '-o', 'parent=eth2']);
    expect(diff.code).toBe(1);
    expect(diff.stderr).toMatch(/^underlay: network web already exists with a different definition: /);
    expect(diff.stderr).toContain('option parent: cluster has "eth1", this one has "eth2"');
    expect(diff.stdout).toBe('');
    // Two subnets (repeat or comma list), ipvlan, --json.
    const j = await cli(['network', 'create', 'l3net', '--subnet', '198.18.16.0/24,198.18.17.0/24', '--gateway', '198.18.17.254', '-o', 'type=ipvlan', '-o', 'ipvlan_mode=l3', '--internal', '--json']);
    expect(j.code).toBe(0);
    const created = NetworkCreateResponse.parse(JSON.parse(j.stdout));
    expect(created.created).toBe(true);
    expect(created.network.definition.subnets).toEqual([
      { subnet: '198.18.16.0/24', auxAddresses: {} },
      { subnet: '198.18.17.0/24', gateway: '198.18.17.254', auxAddresses: {} },
    ]);
    expect(created.network.definition.internal).toBe(true);
  });

  it('refuses bad network create flags as usage errors (exit 2) before asking the controller', async () => {
    const cases: [string[], string][] = [
      [['network', 'create', 'x'], '--subnet is required'],
      [['network', 'create', 'x', '--subnet', '198.18.30.0/33'], '--subnet: invalid CIDR: "198.18.30.0/33"'],
      [['network', 'create', 'x', '--subnet', '198.18.30.0/24', '--gateway', '198.18.31.1'], 'no matching subnet for gateway 198.18.31.1'],
      [['network', 'create', 'x', '--subnet', '198.18.30.0/24', '--ip-range', '198.18.30.0/25', '--ip-range', '198.18.30.128/25'], 'cannot configure multiple ranges'],
      [['network', 'create', 'x', '--subnet', '198.18.30.0/24', '-o', 'parent'], '--opt parent: expected KEY=VALUE'],
      [['network', 'create', '--subnet', '198.18.30.0/24'], 'network create takes one network name'],
      [['network', 'ls', '--subnet', '198.18.30.0/24'], '--subnet is a flag of network create'],
      [['network', 'frob'], 'unknown network command "frob"'],
      [['network', 'ls', '--bogus'], 'unknown flag --bogus'],
      [['events', '--since', 'x'], '--since: must be a whole number'],
    ];
    for (const [args, text] of cases) {
      const r = await cli(args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toContain(text);
    }
    // The controller's own checks come back as its message, exit 1.
    const api = await cli(['network', 'create', 'x', '--subnet', '198.18.30.0/24', '-o', 'macvlan_mode=nope']);
    expect(api.code).toBe(1);
    expect(api.stderr).toMatch(/^underlay: options: requested macvlan mode 'nope' is not valid/);
  });

  it('network ls shows an aligned table; inspect shows the definition', async () => {
    const out = await ok(['network', 'ls']);
    const lines = out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME +MODE +PARENT +SUBNETS +HOSTS +ENDPOINTS +CREATED$/);
    // Aligned: every column starts at the same offset on every line.
    const col = (l: string, word: string) => l.indexOf(word);
    const rows = parseTable(out);
    expect(rows).toEqual([
      { NAME: 'l3net', MODE: 'ipvlan l3', PARENT: '-', SUBNETS: '198.18.16.0/24,198.18.17.0/24', HOSTS: '0/0', ENDPOINTS: '0', CREATED: expect.stringMatching(/ago$|^just now$/) },
      { NAME: 'web', MODE: 'macvlan bridge', PARENT: 'eth1', SUBNETS: '198.18.4.0/24', HOSTS: '0/0', ENDPOINTS: '0', CREATED: expect.stringMatching(/ago$|^just now$/) },
    ]);
    expect(col(lines[2]!, 'macvlan')).toBe(col(lines[0]!, 'MODE'));
    expect(col(lines[2]!, 'eth1')).toBe(col(lines[0]!, 'PARENT'));
    const list = NetworkList.parse(JSON.parse(await ok(['network', 'ls', '--json'])));
    expect(list.networks.map((n) => n.name)).toEqual(['l3net', 'web']);

    const text = await ok(['network', 'inspect', 'web']);
    expect(text).toMatch(/^Name: +web$/m);
    expect(text).toMatch(/^Mode: +macvlan bridge$/m);
    expect(text).toMatch(/^Subnets: +198\.18\.4\.0\/24 \(range 198\.18\.4\.128\/25, gateway 198\.18\.4\.1, aux printer=198\.18\.4\.10\)$/m);
    expect(text).toMatch(/^Labels: +team=a, tier=front$/m);
    expect(text).toMatch(/^IPAM opts: +block_size=27$/m);
    const d = NetworkDetail.parse(JSON.parse(await ok(['network', 'inspect', 'web', '--json'])));
    expect(d.definition.options).toEqual({ macvlan_mode: 'bridge', parent: 'eth1' });
    const missing = await cli(['network', 'inspect', 'nope']);
    expect(missing).toEqual({ code: 1, stdout: '', stderr: 'underlay: network nope not found\n' });
  });

  it('endpoint ls shows an endpoint bound through RPC with the container its node reported', async () => {
    const def = { options: { macvlan_mode: 'bridge', parent: 'eth1' }, ipamOptions: { block_size: '27' }, labels: { team: 'a', tier: 'front' }, subnets: [{ subnet: '198.18.4.0/24', gateway: '198.18.4.1', ipRange: '198.18.4.128/25', auxAddresses: { printer: '198.18.4.10' } }] };
    const joined = await joinReplica(rpc, H1, def, { requestId: 'cli-1', endpointId: EP });
    expect(joined.named).toMatchObject({ member: true });
    expect(joined.named.conflict).toBeUndefined();
    address = joined.address;
    await rpc.call('nodeReport', report(), EmptyRes);

    const rows = parseTable(await ok(['endpoint', 'ls']));
    expect(rows).toEqual([{ ADDRESS: address, HOST: 'h1', CONTAINER: 'nginx-1', NETWORK: 'web', STATE: 'joined', ENDPOINT: EP.slice(0, 12) }]);
    const j = EndpointList.parse(JSON.parse(await ok(['endpoint', 'ls', '--json'])));
    expect(j.endpoints).toEqual([expect.objectContaining({ address, node: 'h1', container: 'nginx-1', network: 'web', state: 'joined', endpointId: EP })]);
    expect(parseTable(await ok(['endpoint', 'ls', '--node', 'h2']))).toEqual([]);
    // The network's view counts it, and its host (Ready: a fresh report renews its lease).
    await rpc.call('nodeReport', report(), EmptyRes);
    expect(parseTable(await ok(['network', 'ls'])).find((r) => r.NAME === 'web')).toMatchObject({ HOSTS: '1/1', ENDPOINTS: '1' });
    const inspect = await ok(['network', 'inspect', 'web']);
    expect(inspect).toMatch(/^HOST +NODE STATUS +STATE +PARENT +REPLICA +DETAIL\nh1 +Ready +ready +eth1 +yes +-$/m);
    expect(inspect).toContain('nginx-1');
  });

  it('ipam usage shows every pool and its blocks', async () => {
    const rows = parseTable(await ok(['ipam', 'usage']));
    // The gateway and the endpoint (the agent reserves aux addresses with requests of their own, not made here).
    expect(rows[0]).toEqual({ 'POOL / BLOCK': '198.18.4.0/24 range 198.18.4.128/25', SPACE: 'underlay', NODES: 'h1', USED: '2', SIZE: '254', 'USE%': '0.78%', NETWORKS: 'web' });
    expect(rows.slice(1).map((r) => [r['POOL / BLOCK'], r.NODES, r.USED, r.SIZE])).toEqual([['198.18.4.128/27', 'h1', '1', '32']]);
    const u = IpamUsage.parse(JSON.parse(await ok(['ipam', 'usage', '--json'])));
    expect(u.pools[0]).toMatchObject({ cidr: '198.18.4.0/24', used: 2, endpoints: 1, reserved: 1 });
  });

  it('node ls shows the node Ready, then NotReady once its lease ran out, then Ready again', async () => {
    await rpc.call('nodeReport', report(), EmptyRes);
    const rows = parseTable(await ok(['node', 'ls']));
    expect(rows).toEqual([{ NAME: 'h1', STATUS: 'Ready', 'LAST SEEN': expect.stringMatching(/^(just now|\d seconds? ago)$/), ADDRESS: '203.0.113.1', VERSION: '0.1.0', ENDPOINTS: '1', NETWORKS: '1/1 ready' }]);
    const j = NodeList.parse(JSON.parse(await ok(['node', 'ls', '--json'])));
    expect(j.nodes[0]).toMatchObject({ name: 'h1', status: 'Ready', leaseMs: LEASE_MS });
    await waitFor(async () => parseTable(await ok(['node', 'ls']))[0]!.STATUS === 'NotReady', { what: 'h1 to turn NotReady', timeoutMs: LEASE_MS + 10_000 });
    const late = parseTable(await ok(['node', 'ls']))[0]!;
    expect(late['LAST SEEN']).toMatch(/^\d+ seconds ago$/);
    expect(parseTable(await ok(['network', 'ls'])).find((r) => r.NAME === 'web')!.HOSTS).toBe('0/1');
    await rpc.call('nodeReport', report(), EmptyRes);
    expect(parseTable(await ok(['node', 'ls']))[0]!.STATUS).toBe('Ready');
  });

  it('-o json|yaml|wide and -q on list commands; version names the controller\'s version', async () => {
    const json = NetworkList.parse(JSON.parse(await ok(['network', 'ls', '-o', 'json'])));
    expect(json.networks.map((n) => n.name)).toEqual(['l3net', 'web']);
    expect(NetworkList.parse(parseYaml(await ok(['network', 'ls', '-o', 'yaml'])))).toEqual(json);
    expect(await ok(['network', 'ls', '-q'])).toBe('l3net\nweb\n');
    expect((await ok(['network', 'ls', '-o', 'wide'])).split('\n')[0]).toMatch(/^NAME .* CREATED +IPV6 +INTERNAL +CREATED BY +SEQ$/);
    expect(await ok(['node', 'ls', '-q'])).toBe('h1\n');
    expect((await ok(['node', 'ls', '-o', 'wide'])).split('\n')[0]).toMatch(/LEASE MS +REGISTERED +INTERFACES$/);
    expect(await ok(['endpoint', 'ls', '-q'])).toBe(`${address}\n`);
    expect(EndpointList.parse(parseYaml(await ok(['endpoint', 'ls', '-o', 'yaml']))).endpoints).toHaveLength(1);
    expect((await ok(['ipam', 'usage', '-q'])).split('\n')).toContain('198.18.4.0/24');
    const bad = await cli(['network', 'ls', '-o', 'xml']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--output (-o): must be one of json, yaml, wide');
    expect((await cli(['network', 'ls', '-q', '-o', 'json'])).code).toBe(2);
    const v = await cli(['version']);
    expect(v).toEqual({ code: 0, stdout: `Client:     0.1.0\nController: 0.1.0 (${base}, c1)\n`, stderr: '' });
    expect(JSON.parse(await ok(['version', '-o', 'json']))).toEqual({ client: { version: '0.1.0' }, controller: { version: '0.1.0', api: 'v1', name: 'c1', role: 'leader', url: base } });
    // The config file's client section: the controller and token from it (flags and the environment stay empty).
    const cfg = path.join(env.dir, 'cli-config.yaml');
    fs.writeFileSync(cfg, `client:\n  controller: ${base}\n  token-file: ${tokenFile}\n`);
    expect((await cli(['node', 'ls', '-q', '--config', cfg], {})).stdout).toBe('h1\n');
    expect((await cli(['node', 'ls', '-q'], { UNDERLAY_CONFIG: cfg })).stdout).toBe('h1\n');
    // A flag wins over the file.
    expect((await cli(['node', 'ls', '--config', cfg, '--controller', 'http://127.0.0.1:9'], {})).code).toBe(1);
  });

  it('network rm removes a network, refuses one with endpoints (naming host and container), and reports unknown names', async () => {
    const busy = await cli(['network', 'rm', 'web']);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain(`network web has active endpoints on h1: container nginx-1 (${address})`);
    const r = await cli(['network', 'rm', 'l3net', 'nope']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('l3net\n');
    expect(r.stderr).toBe('underlay: network nope not found\n');
    expect(parseTable(await ok(['network', 'ls'])).map((x) => x.NAME)).toEqual(['web']);
    await ok(['network', 'create', 'tmp', '--subnet', '198.18.40.0/24']);
    expect(JSON.parse(await ok(['network', 'rm', 'tmp', '--json']))).toEqual({ removed: ['tmp'] });
  });

  it('events prints the log after --since, as lines or JSON', async () => {
    const all = (await ok(['events', '--json'])).trimEnd().split('\n').map((l) => JSON.parse(l) as { seq: number; type: string });
    expect(all.map((e) => e.seq)).toEqual(all.map((_, i) => i + 1));
    expect(all.some((e) => e.type === 'ClusterNetworkCreated')).toBe(true);
    const head = all.length;
    const tail = (await ok(['events', '--since', String(head - 2)])).trimEnd().split('\n');
    expect(tail).toHaveLength(2);
    expect(tail[0]).toMatch(new RegExp(`^ *${head - 1}  \\d{4}-\\d\\d-\\d\\dT\\S+Z  \\w+ +\\S+ +(-|[0-9a-f]{32}) +\\{`));
    expect(await ok(['events', '--since', String(head)])).toBe('');
  });

  it('events --follow prints new events as they are committed', async () => {
    const head = (await ok(['events', '--json'])).trimEnd().split('\n').length;
    const f = follow(['events', '--follow', '--since', String(head), '--json']);
    try {
      // Give the stream a moment to open, then commit an event.
      await new Promise((r) => setTimeout(r, 500));
      expect(f.out).toBe('');
      await ok(['network', 'create', 'followed', '--subnet', '198.18.44.0/24']);
      await waitFor(() => f.out.includes('\n'), { what: 'the follow stream to print the new event', timeoutMs: 15_000 }).catch((e: Error) => {
        throw new Error(`${e.message} (stderr: ${f.err})`);
      });
      const ev = JSON.parse(f.out.split('\n')[0]!) as { seq: number; type: string; data: { name: string } };
      expect(ev).toMatchObject({ seq: head + 1, type: 'ClusterNetworkCreated', data: { name: 'followed' } });
    } finally {
      f.child.kill('SIGTERM');
    }
    expect(await f.exited).toBeNull();
  });

  it('events shows each event\'s trace id; trace ID prints exactly the events of that trace', async () => {
    const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
    const OTHER = '0af7651916cd43dd8448eb211c80319c';
    const tp = (trace: string, span: string) => ({ traceparent: `00-${trace}-${span}-01` });
    const head = (await ok(['events', '--json'])).trimEnd().split('\n').length;
    const poolId = IpamUsage.parse(JSON.parse(await ok(['ipam', 'usage', '--json']))).pools.find((p) => p.cidr === '198.18.4.0/24')!.poolId;
    // Two requests of one trace (an allocation and its release, as an agent's RequestAddress and ReleaseAddress), one of another trace in between.
    const a = await rpc.call('requestAddress', { node: 'h1', poolId, address: '', options: {}, requestId: 'trace-1', kind: 'endpoint' }, RequestAddressRes, tp(TRACE, '00f067aa0ba902b7'));
    const b = await rpc.call('requestAddress', { node: 'h1', poolId, address: '', options: {}, requestId: 'trace-2', kind: 'endpoint' }, RequestAddressRes, tp(OTHER, '00f067aa0ba902b8'));
    await rpc.call('releaseAddress', { node: 'h1', poolId, address: a.address.split('/')[0]!, allocSeq: a.allocSeq }, EmptyRes, tp(TRACE, '00f067aa0ba902b9'));
    await rpc.call('releaseAddress', { node: 'h1', poolId, address: b.address.split('/')[0]!, allocSeq: b.allocSeq }, EmptyRes, tp(OTHER, '00f067aa0ba902ba'));

    // --json: every event as the API sent it, traceId included; the CLI's own requests (network create) have none.
    const all = (await ok(['events', '--json'])).trimEnd().split('\n').map((l) => JSON.parse(l) as ClusterEvent);
    const ours = all.filter((e) => e.traceId === TRACE);
    expect(ours.length).toBeGreaterThanOrEqual(2);
    expect(ours.every((e) => e.seq > head)).toBe(true);
    expect(ours.map((e) => e.type)).toEqual(expect.arrayContaining(['AddressAllocated', 'AddressReleased']));
    expect(all.filter((e) => e.seq > head).every((e) => e.traceId === TRACE || e.traceId === OTHER)).toBe(true);
    expect(all.find((e) => e.type === 'ClusterNetworkCreated')!.traceId).toBeUndefined();

    // The table: a TRACE column, the trace id or '-'.
    const traceColumn = (line: string) => /^ *(\d+)  \S+  \w+ +\S+ +(-|[0-9a-f]{32}) +\{/.exec(line);
    const lines = (await ok(['events'])).trimEnd().split('\n');
    const cells = lines.map((l) => traceColumn(l));
    expect(cells.every(Boolean)).toBe(true);
    expect(cells.map((m) => [Number(m![1]), m![2]])).toEqual(all.map((e) => [e.seq, e.traceId ?? '-']));

    // trace ID: exactly that trace's events, in seq order, as events prints them.
    const j = await cli(['trace', TRACE, '--json']);
    expect({ code: j.code, stderr: j.stderr }).toEqual({ code: 0, stderr: '' });
    expect(j.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as ClusterEvent)).toEqual(ours);
    const t = await ok(['trace', TRACE]);
    expect(t).toBe(lines.filter((_, i) => cells[i]![2] === TRACE).map((l) => `${l}\n`).join(''));
    expect((await ok(['trace', OTHER, '--json'])).trimEnd().split('\n').map((l) => (JSON.parse(l) as ClusterEvent).traceId)).toEqual(all.filter((e) => e.traceId === OTHER).map(() => OTHER));
    // --since: only the later ones.
    const later = (await ok(['trace', TRACE, '--json', '--since', String(ours[0]!.seq)])).trimEnd().split('\n').map((l) => (JSON.parse(l) as ClusterEvent).seq);
    expect(later).toEqual(ours.slice(1).map((e) => e.seq));

    // A trace with no events: nothing on stdout (empty NDJSON with --json), a note on stderr, exit 0.
    const none = 'f'.repeat(32);
    expect(await cli(['trace', none])).toEqual({ code: 0, stdout: '', stderr: `underlay trace: no events for trace ${none}\n` });
    expect(await cli(['trace', none, '--json'])).toEqual({ code: 0, stdout: '', stderr: `underlay trace: no events for trace ${none}\n` });

    // Not a trace id: exit 2 before asking the controller.
    for (const bad of ['xyz', '0'.repeat(32), TRACE.toUpperCase(), `00-${TRACE}-00f067aa0ba902b7-01`]) {
      const r = await cli(['trace', bad]);
      expect({ bad, code: r.code, stdout: r.stdout }).toEqual({ bad, code: 2, stdout: '' });
      expect(r.stderr).toBe(`underlay trace: TRACE_ID must be a W3C trace id: 32 lowercase hex digits, not all zeros (got ${JSON.stringify(bad)})\n`);
    }
    const missing = await cli(['trace']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('trace takes one trace id (got none)');
  });

  it('says clearly when the controller cannot be reached (exit 1)', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    for (const args of [['network', 'ls'], ['node', 'ls'], ['events'], ['events', '--follow'], ['trace', '4bf92f3577b34da6a3ce929d0e0e4736']]) {
      const r = await cli([...args, '--controller', `http://127.0.0.1:${port}`]);
      expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code: 1, stdout: '' });
      expect(r.stderr).toBe(`underlay: cannot reach the controller at http://127.0.0.1:${port} (connect ECONNREFUSED); is it running? set --controller or UNDERLAY_CONTROLLER\n`);
    }
    const bad = await cli(['network', 'ls', '--controller', 'localhost:7410']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--controller (or UNDERLAY_CONTROLLER): must be a URL such as http://127.0.0.1:7410');
  });

  it('says when the token is wrong or missing (exit 1), and takes it from --token, UNDERLAY_TOKEN or a file', async () => {
    const wrong = await cli(['network', 'ls', '--token', 'not-the-token-at-all'], { UNDERLAY_CONTROLLER: base });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toBe(
      `underlay: the controller at ${base} refused the API token (the bearer token is not valid for this controller); check --token, --token-file, UNDERLAY_TOKEN or UNDERLAY_TOKEN_FILE\n`,
    );
    // No token anywhere: the CLI runs with its own empty /var/lib (whatever this machine's /var/lib/underlay holds).
    const none = await cliWithVarLib(['node', 'ls'], { UNDERLAY_CONTROLLER: base }, {});
    expect({ code: none.code, stdout: none.stdout }).toEqual({ code: 1, stdout: '' });
    expect(none.stderr).toBe(
      `underlay: the controller at ${base} needs an API token: set --token, --token-file, UNDERLAY_TOKEN or UNDERLAY_TOKEN_FILE (the controller's --api-token or --api-token-file)\n`,
    );
    // Positive control: the same run finds the token in the file `underlay up` writes (/var/lib/underlay/api-token)...
    expect(await cliWithVarLib(['node', 'ls', '--json'], { UNDERLAY_CONTROLLER: base }, { 'underlay/api-token': { text: `${TOKEN}\n`, mode: 0o600 } })).toMatchObject({ code: 0, stderr: '' });
    // ...and refuses it when others may read it, as the controller does.
    const open = await cliWithVarLib(['node', 'ls'], { UNDERLAY_CONTROLLER: base }, { 'underlay/api-token': { text: `${TOKEN}\n`, mode: 0o644 } });
    expect(open.code).toBe(2);
    expect(open.stderr).toContain('/var/lib/underlay/api-token may be read or written by group or others (mode 0644); a token file must be private');
    // --token wins over UNDERLAY_TOKEN_FILE; UNDERLAY_TOKEN works alone; --token-file too.
    expect((await cli(['node', 'ls', '--token', TOKEN], { UNDERLAY_CONTROLLER: base, UNDERLAY_TOKEN_FILE: '/nonexistent' })).code).toBe(0);
    expect((await cli(['node', 'ls'], { UNDERLAY_CONTROLLER: base, UNDERLAY_TOKEN: TOKEN })).code).toBe(0);
    expect((await cli(['node', 'ls', '--token-file', tokenFile, '--controller', base], {})).code).toBe(0);
    const missingFile = await cli(['node', 'ls', '--token-file', '/nonexistent/token'], { UNDERLAY_CONTROLLER: base });
    expect(missingFile.code).toBe(2);
    expect(missingFile.stderr).toContain('--token-file: cannot read /nonexistent/token: ENOENT');
  });

  // Last: it stops the controller.
  it('events --follow ends with the unreachable message (exit 1) when the controller goes away', async () => {
    const f = follow(['events', '--follow', '--since', '1']);
    try {
      await waitFor(() => f.out.split('\n').length > 3, { what: 'the backlog on the follow stream', timeoutMs: 15_000 });
      expect(f.out.trimStart()).toMatch(/^2  /);
      await controller.stop();
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([f.exited, new Promise((r) => (timer = setTimeout(() => r('still running'), 15_000)))]);
      clearTimeout(timer);
      expect(code).toBe(1);
      expect(f.err).toBe(`underlay: cannot reach the controller at ${base} (connect ECONNREFUSED); is it running? set --controller or UNDERLAY_CONTROLLER\n`);
    } finally {
      f.child.kill('SIGKILL');
    }
  });
});
