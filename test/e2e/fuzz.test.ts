/**
 * The fuzz suite (issue 10: no single message, request or slow client can stop a service): thousands of
 * generated and mutated inputs on every surface a client reaches, on real parts (etcd, nats-server, a
 * controller, and an `underlay agent` process in a private network namespace).
 *
 * - NATS: every RPC method of `rpc` (libs/core/src/protocol/subjects.ts) on its subject, with raw bytes,
 *   arbitrary JSON, requests generated from the method's schema, mutated valid requests (those of the
 *   integration tests' FakeDockerHost and joinReplica), bodies naming another node, other subject nodes, and
 *   payloads up to the server's max_payload. Every reply parses as RpcReply and, when ok, as the method's
 *   result; a valid body naming another node than its subject is refused with permission-denied; no reply
 *   is `internal`. Afterwards the controller is still the leader and answers, and the log folds (from etcd)
 *   to the controller's state with no address held twice.
 * - Plugin socket: every path of the agent's `pluginRoutes`, with generated, mutated and raw bodies, and
 *   whole network lifecycles (CreateNetwork … DeleteNetwork) with generated driver options, parents
 *   included. The agent makes those links in its own network namespace, never the root one (checked before
 *   the first input). Every answer is HTTP 200 with the documented result, or libnetwork's `{"Err": "…"}`
 *   (NetworkDriver, AuthZ) / `{"Error": "…"}` (IpamDriver) with a non-empty text (libnetwork reads an
 *   empty one as success); unknown paths are a JSON 404. The agent process stays alive and logs no
 *   unhandled rejection.
 * - HTTP: every route of the controller's table (services/controller/src/api/routes.ts, plus
 *   /openapi.json), with generated, mutated and raw bodies, path parameters, query strings, methods and
 *   headers (with the token and without). Every answer has a status the route documents (or the
 *   dispatcher's 401/404/405, or 431 for a request head over the server's limit), never a 5xx, and a JSON
 *   body: the route's schema for that status or the error shape `{"error":{"code","message"}}`. /healthz
 *   still answers after, from the leader.
 *
 * Invalid answers are collected (surface, target, input, answer) rather than shrunk: the test fails listing
 * each kind once with its first input. The seed is fixed (UNDERLAY_FUZZ_SEED overrides it,
 * UNDERLAY_FUZZ_SCALE multiplies the runs) and printed, with how many inputs each surface got and the longest
 * the event loop was blocked (the controller runs in this process). UNDERLAY_FUZZ_VERBOSE=1 also prints how
 * the answers went (per target and outcome) to show how deep the inputs reach; =2 adds the error texts.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import * as fc from 'fast-check';
import { z } from 'zod';
import { RpcClient, type NatsConnection } from '@underlay/adapters';
import { HTTP_LIMITS, loadState, type Controller } from '@underlay/controller';
import { pluginRoutes } from '@underlay/node-agent';
import {
  ApiError,
  BindEndpointReq,
  BindEndpointRes,
  ClusterEvent,
  EmptyReq,
  EmptyRes,
  EventsConsumerReq,
  EventsConsumerRes,
  EventsHeadReq,
  EventsHeadRes,
  NetworkNameReq,
  NetworkNameRes,
  NetworkRecordReq,
  NetworkRemoveReq,
  NetworkRemoveRes,
  NodeReport,
  ReadEventsReq,
  ReadEventsRes,
  ReleaseAddressReq,
  ReleasePoolReq,
  RequestAddressReq,
  RequestAddressRes,
  RequestPoolReq,
  RequestPoolRes,
  RpcReply,
  SnapshotReadReq,
  SnapshotReadRes,
  SnapshotIndexReq,
  SnapshotIndexRes,
  SnapshotRangeReq,
  SnapshotRangeRes,
  describe as describeState,
  nodeFromToken,
  nodeToken,
  parseAddrWithPrefix,
  plugin,
  rpc,
  rpcSubject,
  type ClusterState,
  type RpcMethod,
} from '@underlay/core';
import { apiRoutes, type RouteSpec } from '../../services/controller/src/api/routes';
import { OpenApiDocument } from '../../services/controller/src/openapi';
import { checkPrerequisites, freePort, spawnLogged, stopProcess, waitFor, which, type Proc } from '../lab';
import { pipeSockets } from '../lab/relay';
import { FakeDockerHost, GW, joinReplica, joinedReport, mac, startEnv, type Env } from '../integration/support';
import { CLI, ROOT, ensureBuilt } from './support/cluster';
import { Findings, fromSchema, fuzzScale, fuzzSeed, mutated, nastyString, preview, rawBody, toWire, type Hints } from './support/fuzz';

jest.setTimeout(300_000);

const SEED = fuzzSeed();
const SCALE = fuzzScale();
/** Runs per surface (each run is a batch of inputs sent together), tuned on a 2-core machine to keep the file near a minute. */
const RUNS = { nats: Math.round(180 * SCALE), plugin: Math.round(130 * SCALE), http: Math.round(150 * SCALE) };
const BATCH = { nats: 16, plugin: 8, http: 16 };
const TOKEN = 'fuzz-token-0123456789abcdef';
const NODE = 'fz1';
const OTHER = 'fz2';
const AGENT_NODE = 'fzagent';
/** A link in the agent's namespace to make macvlans on (this kernel may lack dummy, 8021q and ipvlan: those fail, and the answers must say so). */
const PARENT = 'fz0';

const findings = new Findings();
const started = Date.now();
const took: Record<string, number> = {};
/** The longest this process' event loop (the controller's too: it runs here) was blocked, per surface. */
const lag: Record<string, number> = {};
const loopDelay = monitorEventLoopDelay({ resolution: 20 });
let env: Env;
let controller: Controller;
let nc: NatsConnection;

const hex64 = (i: number) => i.toString(16).padStart(64, '0');

// ---------------------------------------------------------------------------------------------
// Domain values (hints): what the schemas cannot say, so generated inputs also get past the checks

const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet, octet, octet).map((a) => a.join('.'));
const ipv6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }).map((a) => a.map((x) => x.toString(16)).join(':'));
const cidr = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.constantFrom('198.18', '10.77', '172.29'), octet, fc.integer({ min: 16, max: 30 })).map(([p, o, len]) => `${p}.${o}.0/${len}`) },
  { weight: 1, arbitrary: fc.tuple(ipv4, fc.integer({ min: 0, max: 33 })).map(([a, len]) => `${a}/${len}`) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 40, max: 128 })).map(([x, len]) => `fd00:${x.toString(16)}::/${len}`) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('0.0.0.0/0', '0.0.0.0/1', '255.255.255.255/32', '198.18.0.0/31', '198.18.0.0/32', '::/0', 'fd00::/127', '1.2.3.4/33', '1.2.3/24', '01.2.3.4/24', '198.18.0.0/24 ', '', '::ffff:1.2.3.0/120', '198.18.0.0/-1'),
  },
);
const ipAddress = fc.oneof(ipv4, ipv6, fc.constantFrom('', '198.18.0.1', '198.18.0.255', '198.18.0.0', '0.0.0.0', '::', '::ffff:1.2.3.4', '1.2.3.4/24', '198.18.0.300'));
const dockerIdArb = (known: string[]) => fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...known) }, { weight: 2, arbitrary: fc.stringMatching(/^[0-9a-f]{64}$/) }, { weight: 1, arbitrary: nastyString });
const macArb = fc.stringMatching(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
const optionValue = fc.oneof(macArb, fc.constantFrom(GW.RequestAddressType, '24', '26', '28', '0', '33', '-1', 'x', 'vlan30', 'true', 'false', 'eth1', 'lo', 'bridge', 'passthru', 'l3'), nastyString);
const optionKey = fc.constantFrom('com.docker.network.endpoint.macaddress', 'RequestAddressType', 'block_size', 'space', 'strict_affinity', 'parent', 'host_iface', 'macvlan_mode', 'ipvlan_mode', 'ipvlan_flag', 'type');
const options = fc.dictionary(fc.oneof({ weight: 4, arbitrary: optionKey }, { weight: 1, arbitrary: nastyString }), optionValue, { maxKeys: 4 });

// ---------------------------------------------------------------------------------------------
// NATS: every RPC method, its request and result schemas, and valid examples

interface MethodSpec {
  req: z.ZodType;
  res: z.ZodType;
  examples: unknown[];
}

let methods: Record<RpcMethod, MethodSpec>;
let natsHints: Hints;
let maxPayload = 1024 * 1024;

/** Sends `data` on `method`'s subject for the node token `subjectNode` and checks the reply; `body` (the generated value, if any) is only shown. */
async function natsCheck(method: RpcMethod, subjectNode: string, data: Uint8Array, body: unknown): Promise<void> {
  const subject = `underlay.rpc.v1.${subjectNode}.${rpc[method]}`;
  findings.count('nats', method);
  const f = (problem: string, answer: string) => findings.add({ surface: 'nats', target: method, problem, input: `${subject} ${preview(body ?? data)}`, answer });
  let text: string;
  try {
    const msg = await nc.request(subject, data, { timeout: 20_000 });
    text = msg.string();
  } catch (e) {
    f('no reply', (e as Error).message);
    return;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    f('reply is not JSON', preview(text));
    return;
  }
  const reply = RpcReply.safeParse(json);
  if (!reply.success) {
    f(`reply is not an RpcReply: ${reply.error.issues[0]?.message}`, preview(text));
    return;
  }
  const r = reply.data;
  findings.outcome('nats', `${method} ${r.ok ? 'ok' : r.error.code}`);
  if (process.env.UNDERLAY_FUZZ_VERBOSE === '2' && !r.ok) findings.outcome('nats-errors', `${method}: ${r.error.message.replace(/"[^"]*"|\d+/g, '…').slice(0, 90)}`);
  if (r.ok) {
    const res = methods[method].res.safeParse(r.result);
    if (!res.success) f(`result does not match the method's schema: ${res.error.issues[0]?.path.join('.')}: ${res.error.issues[0]?.message}`, preview(text));
    if (method === 'readEvents') {
      for (const ev of (r.result as { events: unknown[] }).events ?? []) {
        if (!ClusterEvent.safeParse(ev).success) f('readEvents returned an event that is not a ClusterEvent', preview(ev));
      }
    }
  } else {
    if (r.error.code === 'internal') f('internal error for a client input', preview(text));
    if (r.error.message.trim() === '') f('error reply with an empty message', preview(text));
  }
  // A valid body that names another node than its subject is refused, whatever else it asks (a `node` key that
  // the method's schema does not have names nobody: it is dropped with the other unknown keys).
  let sent: unknown;
  try {
    sent = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    sent = undefined;
  }
  const parsed = methods[method].req.safeParse(sent);
  const named = parsed.success ? (parsed.data as { node?: unknown } | null)?.node : undefined;
  if (typeof named === 'string' && named !== nodeFromToken(subjectNode)) {
    if (r.ok || r.error.code !== 'permission-denied') f(`body names node ${named} on ${nodeFromToken(subjectNode)}'s subject and was not refused with permission-denied`, preview(text));
  }
}

type NatsInput = { method: RpcMethod; token: string; body?: unknown; raw?: Uint8Array };

function natsInputs(): fc.Arbitrary<NatsInput> {
  const names = Object.keys(rpc) as RpcMethod[];
  const token = fc.oneof(
    { weight: 12, arbitrary: fc.constant(nodeToken(NODE)) },
    { weight: 2, arbitrary: fc.constant(nodeToken(OTHER)) },
    { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,20}$/).map(nodeToken) },
    // Tokens no node name maps to (NATS takes them; the controller must still answer sanely).
    { weight: 1, arbitrary: fc.constantFrom('~', '~~', 'a~', '-', '_', '%', '$x', 'é', 'ü~x', 'x'.repeat(200)) },
  );
  return fc.constantFrom(...names).chain((method) => {
    const spec = methods[method];
    const hasNode = 'node' in ((spec.req as z.ZodObject).shape ?? {});
    const examples = fc.constantFrom(...spec.examples);
    const json: fc.Arbitrary<unknown> = fc.oneof(
      { weight: 4, arbitrary: fromSchema(spec.req, natsHints) },
      { weight: 4, arbitrary: mutated(examples) },
      { weight: 1, arbitrary: mutated(fromSchema(spec.req, natsHints)) },
      { weight: 1, arbitrary: examples },
      { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
    );
    return fc.record({
      method: fc.constant(method),
      token,
      // Mostly the subject's own node in the body; sometimes another one, or whatever was generated.
      who: fc.integer({ min: 0, max: 9 }),
      body: json,
      // One in six is not the request at all.
      raw: fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: rawBody }),
    }).map(({ method, token, who, body, raw }) => {
      if (raw) return { method, token, raw };
      if (hasNode && body && typeof body === 'object' && !Array.isArray(body) && who < 9) {
        const node = who < 7 ? nodeFromToken(token) : who < 8 ? OTHER : NODE;
        return { method, token, body: Object.defineProperty({ ...(body as object) }, 'node', { value: node, enumerable: true, writable: true }) };
      }
      return { method, token, body };
    });
  });
}

const wire = (i: NatsInput): Uint8Array => i.raw ?? Buffer.from(toWire(i.body), 'utf8');

/** Requests as large as NATS takes: valid ones (lists at their maximum, padding keys) and oversized fields. */
function oversizedNatsInputs(): NatsInput[] {
  const room = maxPayload - 4096;
  const out: NatsInput[] = [];
  const endpoints = Array.from({ length: Math.floor(room / 67) }, (_, i) => hex64(i));
  const ifaces = Array.from({ length: Math.min(65_536, Math.floor(room / 18)) }, (_, i) => `veth${i.toString(16).padStart(11, '0')}`);
  const report = methods.nodeReport.examples[0] as Record<string, unknown>;
  out.push({ method: 'nodeReport', token: NODE, body: { ...report, endpoints, endpointStates: [] } });
  out.push({ method: 'nodeReport', token: NODE, body: { ...report, interfaces: ifaces } });
  out.push({ method: 'nodeReport', token: NODE, body: { ...report, endpoints: [...endpoints, ...endpoints].slice(0, 70_000).map((e) => e.slice(0, 8)) } });
  out.push({ method: 'readEvents', token: NODE, body: { fromSeq: 1, limit: 10_000 } });
  for (const method of Object.keys(rpc) as RpcMethod[]) {
    const ex = methods[method].examples[0] as Record<string, unknown>;
    const size = Buffer.byteLength(toWire(ex));
    // Valid, padded to the limit with a key the schema does not know.
    out.push({ method, token: NODE, body: { ...ex, padding: 'x'.repeat(room - size) } });
    // Every string field as long as the payload allows.
    for (const [k, v] of Object.entries(ex)) {
      if (typeof v === 'string' && k !== 'node') out.push({ method, token: NODE, body: { ...ex, [k]: '€'.repeat(Math.floor((room - size) / 3)) } });
    }
    // A deep array where the body should be.
    out.push({ method, token: NODE, raw: Buffer.from(`${'['.repeat(room / 2)}${']'.repeat(room / 2)}`) });
  }
  return out;
}

/** Addresses held twice in a state: the same address (in one space and family) in two pools. */
function duplicateAddresses(state: ClusterState): string[] {
  const seen = new Map<string, string>();
  const dups: string[] = [];
  for (const p of state.pools.values()) {
    for (const v of p.allocs.keys()) {
      const key = `${p.space}|${p.cidr.family}|${v}`;
      const other = seen.get(key);
      if (other && other !== p.poolId) dups.push(`${key} in ${other} and ${p.poolId}`);
      seen.set(key, p.poolId);
    }
  }
  return dups;
}

// ---------------------------------------------------------------------------------------------
// Plugin socket

interface PluginAnswer {
  status: number;
  text: string;
}

function pluginPost(socketPath: string, p: string, body: Uint8Array, method = 'POST'): Promise<PluginAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: p, method, headers: { accept: 'application/vnd.docker.plugins.v1.2+json', 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
    req.end(body);
  });
}

const PluginErr = z.strictObject({ Err: z.string().min(1) });
const PluginError = z.strictObject({ Error: z.string().min(1) });
const Empty = z.strictObject({});
const cidrText = z.string().refine((s) => {
  try {
    parseAddrWithPrefix(s);
    return true;
  } catch {
    return false;
  }
}, 'not an address with a prefix length');
const AuthZAnswer = z.strictObject({ Allow: z.boolean(), Msg: z.string().optional(), Err: z.string().optional() });

/** What each plugin path answers on success (libnetwork's drivers/remote/api and ipams/remote/api, Docker's authorization API). */
const pluginResults: Record<string, z.ZodType> = {
  '/Plugin.Activate': z.strictObject({ Implements: z.array(z.enum(['NetworkDriver', 'IpamDriver', 'authz'])) }),
  '/AuthZPlugin.AuthZReq': AuthZAnswer,
  '/AuthZPlugin.AuthZRes': AuthZAnswer,
  '/NetworkDriver.GetCapabilities': z.strictObject({ Scope: z.enum(['local', 'global']), ConnectivityScope: z.enum(['local', 'global']).optional() }),
  '/NetworkDriver.CreateNetwork': Empty,
  '/NetworkDriver.DeleteNetwork': Empty,
  '/NetworkDriver.CreateEndpoint': z.strictObject({ Interface: z.strictObject({ MacAddress: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/) }).optional() }),
  '/NetworkDriver.DeleteEndpoint': Empty,
  '/NetworkDriver.EndpointOperInfo': z.strictObject({ Value: z.record(z.string(), z.unknown()) }),
  '/NetworkDriver.Join': z.strictObject({
    InterfaceName: z.strictObject({ SrcName: z.string().min(1).max(15), DstPrefix: z.string().min(1) }),
    Gateway: z.string().optional(),
    GatewayIPv6: z.string().optional(),
    StaticRoutes: z.array(z.strictObject({ Destination: z.string(), RouteType: z.union([z.literal(0), z.literal(1)]), NextHop: z.string().optional() })).optional(),
    DisableGatewayService: z.boolean().optional(),
  }),
  '/NetworkDriver.Leave': Empty,
  '/NetworkDriver.DiscoverNew': Empty,
  '/NetworkDriver.DiscoverDelete': Empty,
  '/NetworkDriver.ProgramExternalConnectivity': Empty,
  '/NetworkDriver.RevokeExternalConnectivity': Empty,
  '/NetworkDriver.AllocateNetwork': z.strictObject({ Options: z.record(z.string(), z.string()).optional() }),
  '/NetworkDriver.FreeNetwork': Empty,
  '/IpamDriver.GetCapabilities': z.strictObject({ RequiresMACAddress: z.boolean(), RequiresRequestReplay: z.boolean() }),
  '/IpamDriver.GetDefaultAddressSpaces': z.strictObject({ LocalDefaultAddressSpace: z.string().min(1), GlobalDefaultAddressSpace: z.string().min(1) }),
  '/IpamDriver.RequestPool': z.strictObject({ PoolID: z.string().min(1), Pool: cidrText, Data: z.record(z.string(), z.string()) }),
  '/IpamDriver.ReleasePool': Empty,
  '/IpamDriver.RequestAddress': z.strictObject({ Address: cidrText, Data: z.record(z.string(), z.string()) }),
  '/IpamDriver.ReleaseAddress': Empty,
};

const AuthZRequest = z.looseObject({ RequestMethod: z.string().optional(), RequestUri: z.string().optional() });
const DiscoveryRequest = z.looseObject({ DiscoveryType: z.number().int(), DiscoveryData: z.unknown() });
const ProgramRequest = z.looseObject({ NetworkID: z.string().min(1), EndpointID: z.string().min(1), Options: z.record(z.string(), z.unknown()).optional() });

/** The request schema of each plugin path (those that take nothing get an empty object). */
const pluginRequests: Record<string, z.ZodType> = {
  '/Plugin.Activate': z.looseObject({}),
  '/AuthZPlugin.AuthZReq': AuthZRequest,
  '/AuthZPlugin.AuthZRes': AuthZRequest,
  '/NetworkDriver.GetCapabilities': z.looseObject({}),
  '/NetworkDriver.CreateNetwork': plugin.CreateNetworkRequest,
  '/NetworkDriver.DeleteNetwork': plugin.NetworkIdRequest,
  '/NetworkDriver.CreateEndpoint': plugin.CreateEndpointRequest,
  '/NetworkDriver.DeleteEndpoint': plugin.EndpointRequest,
  '/NetworkDriver.EndpointOperInfo': plugin.EndpointRequest,
  '/NetworkDriver.Join': plugin.JoinRequest,
  '/NetworkDriver.Leave': plugin.EndpointRequest,
  '/NetworkDriver.DiscoverNew': DiscoveryRequest,
  '/NetworkDriver.DiscoverDelete': DiscoveryRequest,
  '/NetworkDriver.ProgramExternalConnectivity': ProgramRequest,
  '/NetworkDriver.RevokeExternalConnectivity': plugin.EndpointRequest,
  '/NetworkDriver.AllocateNetwork': plugin.CreateNetworkRequest,
  '/NetworkDriver.FreeNetwork': plugin.NetworkIdRequest,
  '/IpamDriver.GetCapabilities': z.looseObject({}),
  '/IpamDriver.GetDefaultAddressSpaces': z.looseObject({}),
  '/IpamDriver.RequestPool': plugin.RequestPoolRequest,
  '/IpamDriver.ReleasePool': plugin.ReleasePoolRequest,
  '/IpamDriver.RequestAddress': plugin.RequestAddressRequest,
  '/IpamDriver.ReleaseAddress': plugin.ReleaseAddressRequest,
};

const PLUGIN_PATHS = Object.keys(pluginRoutes({} as Parameters<typeof pluginRoutes>[0]));

interface AgentNs {
  proxy: Proc;
  agent: Proc;
  socketPath: string;
  relay: net.Server;
  dir: string;
}
let agentNs: AgentNs | undefined;

/**
 * Starts `underlay agent` in a private network namespace: a TCP proxy there (127.0.0.1:PORT → a unix socket
 * the test relays to nats-server) holds the namespace; the agent joins it with nsenter. No Docker runs
 * there: the agent's Docker calls fail, which its answers must carry too.
 */
async function startAgentInNamespace(natsPort: number, dir: string): Promise<AgentNs> {
  const relayPath = path.join(dir, 'nats.sock');
  const relay = net.createServer((c) => {
    pipeSockets(c, net.connect(natsPort, '127.0.0.1'));
  });
  await new Promise<void>((r) => relay.listen(relayPath, () => r()));
  const port = 4222;
  const proxy = spawnLogged(
    which('unshare')!,
    ['--net', '--', 'sh', '-c', `ip link set lo up && ip link add ${PARENT} type veth peer name ${PARENT}p && ip link set ${PARENT} up && exec "$0" "$@"`, process.execPath, path.join(__dirname, 'fixtures/netns-tcp-proxy.js'), relayPath, String(port)],
    { name: 'netns-proxy', logFile: path.join(dir, 'proxy.log') },
  );
  await waitFor(() => fs.readFileSync(proxy.logFile, 'utf8').includes('listening'), { timeoutMs: 20_000, what: 'the TCP proxy in the private namespace', proc: proxy });
  const rootNs = fs.readlinkSync('/proc/self/ns/net');
  const proxyNs = fs.readlinkSync(`/proc/${proxy.pid}/ns/net`);
  if (proxyNs === rootNs) throw new Error(`refusing to fuzz: the proxy (pid ${proxy.pid}) is in the root network namespace`);
  const pluginDir = path.join(dir, 'plugins');
  const agent = spawnLogged(
    which('nsenter')!,
    [
      `--net=/proc/${proxy.pid}/ns/net`, '--', process.execPath, CLI, 'agent',
      '--node', AGENT_NODE, '--nats', `nats://127.0.0.1:${port}`, '--plugin-dir', pluginDir, '--state-dir', path.join(dir, 'state'),
      '--docker', `unix://${path.join(dir, 'no-docker.sock')}`, '--report-interval-ms', '2000', '--address', '198.51.100.77',
    ],
    { name: 'agent', logFile: path.join(dir, 'agent.log'), cwd: ROOT },
  );
  const socketPath = path.join(pluginDir, 'underlay.sock');
  // Answering, not only there: the file exists from bind(), a moment before listen().
  const answers = () => pluginPost(socketPath, '/Plugin.Activate', Buffer.from('{}')).then((a) => a.status === 200, () => false);
  await waitFor(async () => fs.existsSync(socketPath) && (await answers()), { timeoutMs: 30_000, what: 'the agent\'s plugin socket to answer', proc: agent });
  // The safety line: the process that makes links from fuzzed parents is not in the root namespace.
  const agentNsLink = fs.readlinkSync(`/proc/${agent.pid}/ns/net`);
  if (agentNsLink === rootNs || agentNsLink !== proxyNs) throw new Error(`refusing to fuzz: the agent (pid ${agent.pid}) is in ${agentNsLink}, not the private namespace ${proxyNs}`);
  return { proxy, agent, socketPath, relay, dir };
}

async function pluginCheck(socketPath: string, p: string, body: unknown, raw?: Uint8Array, method = 'POST'): Promise<unknown> {
  const known = PLUGIN_PATHS.includes(p) && method === 'POST';
  findings.count('plugin', known ? p : 'unknown path or method');
  const f = (problem: string, answer: string) => findings.add({ surface: 'plugin', target: p, problem, input: `${method} ${p} ${preview(raw ?? body)}`, answer });
  let a: PluginAnswer;
  try {
    a = await pluginPost(socketPath, p, raw ?? Buffer.from(toWire(body), 'utf8'), method);
  } catch (e) {
    f('no answer', (e as Error).message);
    return undefined;
  }
  let json: unknown;
  try {
    json = JSON.parse(a.text);
  } catch {
    f(`HTTP ${a.status} answer is not JSON`, preview(a.text));
    return undefined;
  }
  if (!known) {
    if (a.status !== 404 || !PluginErr.safeParse(json).success) f('an unknown path or method is not a JSON 404 {"Err"}', `${a.status} ${preview(a.text)}`);
    return undefined;
  }
  if (a.status !== 200) {
    f(`HTTP ${a.status} (libnetwork expects 200 with a JSON body)`, preview(a.text));
    return undefined;
  }
  const errKey = p.startsWith('/IpamDriver.') ? 'Error' : 'Err';
  const failed = !!json && typeof json === 'object' && !Array.isArray(json) && errKey in json;
  findings.outcome('plugin', `${p} ${failed ? errKey : 'ok'}`);
  if (process.env.UNDERLAY_FUZZ_VERBOSE === '2' && failed) findings.outcome('plugin-errors', `${p}: ${String((json as Record<string, unknown>)[errKey]).replace(/"[^"]*"|\d+/g, '…').slice(0, 90)}`);
  if (failed) {
    if (!(errKey === 'Error' ? PluginError : PluginErr).safeParse(json).success) f(`error answer is not {"${errKey}": non-empty text}`, preview(a.text));
    return undefined;
  }
  const ok = pluginResults[p]!.safeParse(json);
  if (!ok.success) f(`answer is neither the result nor {"${errKey}"}: ${ok.error.issues[0]?.path.join('.')}: ${ok.error.issues[0]?.message}`, preview(a.text));
  return json;
}

// ---------------------------------------------------------------------------------------------
// HTTP

interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  streamed: boolean;
}

const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });

function httpCall(port: number, method: string, target: string, headers: Record<string, string>, body?: Uint8Array): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path: target, agent: httpAgent, headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) } },
      (res) => {
        const chunks: Buffer[] = [];
        const ndjson = /ndjson/.test(String(res.headers['content-type'] ?? ''));
        const done = (streamed: boolean) => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8'), streamed });
        // A follow stream never ends: read it for a moment, then hang up.
        const timer = ndjson
          ? setTimeout(() => {
              res.destroy();
              done(true);
            }, 300)
          : undefined;
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          done(false);
        });
        res.on('error', (e) => (ndjson ? done(true) : reject(e)));
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
    req.end(body);
  });
}

interface HttpRoute {
  method: string;
  path: string;
  auth: boolean;
  spec?: RouteSpec;
  pattern: RegExp;
  responses: Record<number, { schema?: z.ZodType; mediaType?: string; alternative?: { mediaType: string; schema: z.ZodType } }>;
}

function compileRoute(r: { method: string; path: string; auth: boolean; responses: HttpRoute['responses'] }, spec?: RouteSpec): HttpRoute {
  const source = r.path
    .split(/(\{\w+\})/)
    .map((part) => (/^\{\w+\}$/.test(part) ? '([^/]+)' : part.replace(/[.*+?^$()|[\]\\]/g, '\\$&')))
    .join('');
  return { ...r, spec, pattern: new RegExp(`^${source}$`) };
}

const ROUTES: HttpRoute[] = [
  ...apiRoutes.map((r) => compileRoute(r, r)),
  compileRoute({ method: 'GET', path: '/openapi.json', auth: false, responses: { 200: { schema: OpenApiDocument } } }),
];

interface HttpInput {
  method: string;
  target: string;
  headers: Record<string, string>;
  body?: Uint8Array;
  note: string;
}

/** encodeURIComponent that takes lone surrogates too (as U+FFFD). */
const uriEncode = (s: string) => encodeURIComponent(s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd'));
const headerSafe = (s: string) => s.replace(/[^\x20-\x7e]/g, '?');

function httpInputs(knownNames: string[]): fc.Arbitrary<HttpInput> {
  const auth = fc.oneof(
    { weight: 12, arbitrary: fc.constant(`Bearer ${TOKEN}`) },
    { weight: 1, arbitrary: fc.constant(undefined) },
    {
      weight: 2,
      arbitrary: fc.constantFrom('Bearer wrong-token-0123456789', `Basic ${TOKEN}`, 'Bearer', 'Bearer ', `bearer ${TOKEN}`, `Bearer ${TOKEN} x`, `Bearer  ${TOKEN}`, `Bearer ${TOKEN}x`, `Bearer ${'x'.repeat(4000)}`, 'Bearer \u00e9'),
    },
  );
  const extraHeaders = fc.record(
    {
      'content-type': fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', ''),
      accept: fc.constantFrom('application/json', 'application/x-ndjson', '*/*', 'text/html'),
      'x-underlay-user': fc.oneof(nastyString.map(headerSafe), fc.constantFrom('root', 'admin', 'node:h1')),
      'x-forwarded-for': fc.constantFrom('10.0.0.1', '::1'),
    },
    { requiredKeys: [] },
  );
  const paramValue = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...knownNames) },
    { weight: 3, arbitrary: fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/) },
    { weight: 2, arbitrary: nastyString.map((s) => uriEncode(s)) },
    { weight: 1, arbitrary: fc.constantFrom('%', '%zz', '%c0%af', '%ff', '%00', '..', '.', 'a%2Fb', '%2e%2e', '~', 'a;b', 'a?b') },
    { weight: 1, arbitrary: fc.integer({ min: 129, max: 6000 }).map((n) => 'a'.repeat(n)) },
  );
  const queryFor = (r: HttpRoute): fc.Arbitrary<string> => {
    const schema = r.spec?.query;
    const generated = schema
      ? fc.oneof(fromSchema(schema), mutated(fromSchema(schema))).map((q) => {
          if (!q || typeof q !== 'object' || Array.isArray(q)) return `q=${encodeURIComponent(String(toWire(q)))}`;
          // Never a follow stream with a huge backlog in flight for long: follow answers are read for 300 ms.
          return new URLSearchParams(Object.entries(q as Record<string, unknown>).map(([k, v]) => [k, typeof v === 'string' ? v : toWire(v).slice(0, 2000)])).toString();
        })
      : fc.constant('');
    return fc.oneof(
      { weight: 4, arbitrary: generated },
      { weight: 1, arbitrary: fc.constantFrom('', 'since=', 'since=%zz', 'limit=0', 'limit=10001', 'limit=1e3', 'since=-1', 'since=99999999999999999999', 'follow=yes', 'follow=true&follow=false', '&&&', '=', 'a=1&a=2&a=3', 'node=', 'network=%00') },
      { weight: 1, arbitrary: fc.dictionary(nastyString, nastyString, { maxKeys: 4 }).map((d) => new URLSearchParams(d).toString()) },
    );
  };
  const bodyFor = (r: HttpRoute): fc.Arbitrary<Uint8Array | undefined> => {
    const schema = r.spec?.body;
    const json = (a: fc.Arbitrary<unknown>) => a.map((v) => Buffer.from(toWire(v), 'utf8'));
    if (!schema) return fc.oneof({ weight: 6, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: rawBody });
    const hints: Hints = {
      name: fc.oneof(fc.constantFrom(...knownNames), fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,20}$/)),
      subnet: cidr,
      ipRange: cidr,
      gateway: ipAddress,
      options,
      ipamOptions: options,
      labels: fc.dictionary(fc.string({ maxLength: 10 }), fc.string({ maxLength: 10 }), { maxKeys: 3 }),
    };
    const valid = fc.record({ name: fc.stringMatching(/^fzh[a-z0-9]{1,10}$/), subnet: fc.tuple(octet, fc.integer({ min: 22, max: 28 })) }).map(({ name, subnet: [o, len] }) => ({
      name,
      options: { parent: 'eth1' },
      subnets: [{ subnet: `10.99.${o}.0/${len >= 24 ? len : 24}`, gateway: `10.99.${o}.1` }],
      labels: { team: 'fuzz' },
    }));
    return fc.oneof(
      { weight: 3, arbitrary: json(fromSchema(schema, hints)) },
      { weight: 3, arbitrary: json(mutated(valid)) },
      { weight: 1, arbitrary: json(valid) },
      { weight: 2, arbitrary: rawBody },
      { weight: 1, arbitrary: fc.constant(undefined) },
      // Over the 1 MiB limit: refused (413) before it is read.
      { weight: 1, arbitrary: fc.integer({ min: 1024 * 1024 + 1, max: 1024 * 1024 + 4096 }).map((n) => Buffer.alloc(n, 0x20)) },
    );
  };
  const routeInput = fc.constantFrom(...ROUTES).chain((r) =>
    fc
      .record({
        method: fc.oneof({ weight: 10, arbitrary: fc.constant(r.method) }, { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE') }),
        params: fc.array(paramValue, { minLength: 1, maxLength: 1 }),
        suffix: fc.oneof({ weight: 12, arbitrary: fc.constant('') }, { weight: 1, arbitrary: fc.constantFrom('/', '//', '/x', '?', '#frag', '/..', '%20') }),
        query: queryFor(r),
        auth,
        headers: extraHeaders,
        body: bodyFor(r),
      })
      .map(({ method, params, suffix, query, auth, headers, body }): HttpInput => {
        const p = r.path.replace(/\{\w+\}/g, () => params[0]!);
        const target = `${p}${suffix}${query ? `?${query}` : ''}`;
        const h = Object.fromEntries(Object.entries({ ...headers, authorization: auth }).filter((e): e is [string, string] => e[1] !== undefined));
        return { method, target, headers: h, body, note: `${r.method} ${r.path}` };
      }),
  );
  const stray = fc
    .record({
      method: fc.constantFrom('GET', 'POST', 'DELETE', 'PUT'),
      target: fc.oneof(
        fc.constantFrom('/', '/v1', '/v1/', '/v2/networks', '/V1/networks', '/healthz/', '/v1/networks/a/b', '/v1//networks', '/openapi.json/x', '/v1/ipam/usage/x', '/..%2f..%2fetc%2fpasswd', '/%ff', '*'),
        nastyString.map((s) => `/${uriEncode(s)}`),
        nastyString.map((s) => `/v1/${uriEncode(s)}`),
      ),
      auth,
      body: fc.option(rawBody, { nil: undefined, freq: 3 }),
    })
    .map(({ method, target, auth, body }): HttpInput => ({ method, target, headers: auth !== undefined ? { authorization: auth } : {}, body, note: 'no route' }));
  return fc.oneof({ weight: 12, arbitrary: routeInput }, { weight: 1, arbitrary: stray });
}

/**
 * The statuses an answer to `method target` may have, and the route it reached (if any): the route's documented
 * ones, or the dispatcher's (401 on /v1 without the token, 404, 405), or 431 for a request head over the
 * server's limit (services/controller/src/api/limits.ts: "above it, 431"), which is all that request may get.
 */
function expectedFor(method: string, target: string, authorized: boolean, headBytes: number): { statuses: Set<number>; route?: HttpRoute } {
  const limit = HTTP_LIMITS.maxHeaderBytes.default;
  if (headBytes > limit) return { statuses: new Set([431]) };
  // Near the limit the server's count (it includes what the client adds) and ours differ a little.
  const near = headBytes > limit - 1024 ? [431] : [];
  const r = routeStatuses(method, target, authorized);
  return { statuses: new Set([...r.statuses, ...near]), route: r.route };
}

function routeStatuses(method: string, target: string, authorized: boolean): { statuses: Set<number>; route?: HttpRoute } {
  let pathname: string;
  try {
    pathname = new URL(target, 'http://controller').pathname;
  } catch {
    return { statuses: new Set([400]) };
  }
  const v1 = pathname === '/v1' || pathname.startsWith('/v1/');
  if (v1 && !authorized) return { statuses: new Set([401]) };
  const matches = ROUTES.filter((r) => r.pattern.test(pathname));
  if (matches.length === 0) return { statuses: new Set([404]) };
  const route = matches.find((r) => r.method === method);
  if (!route) return { statuses: new Set([405]) };
  return { statuses: new Set(Object.keys(route.responses).map(Number)), route };
}

async function httpCheck(port: number, i: HttpInput): Promise<void> {
  const authorized = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(i.headers.authorization ?? '')?.[1] === TOKEN;
  const headBytes = Buffer.byteLength(`${i.method} ${i.target} HTTP/1.1\r\n`) + Object.entries(i.headers).reduce((n, [k, v]) => n + Buffer.byteLength(`${k}: ${v}\r\n`), 0);
  const { statuses, route } = expectedFor(i.method, i.target, authorized, headBytes);
  const target = route ? `${route.method} ${route.path}` : i.note;
  findings.count('http', target);
  const f = (problem: string, answer: string) =>
    findings.add({ surface: 'http', target, problem, input: `${i.method} ${preview(i.target, 200)} auth=${preview(i.headers.authorization ?? '-', 40)} body=${i.body ? preview(i.body.length > 300 ? `${i.body.length} bytes: ${Buffer.from(i.body.subarray(0, 200)).toString('utf8')}` : Buffer.from(i.body).toString('utf8')) : '-'}`, answer });
  let a: HttpAnswer;
  try {
    a = await httpCall(port, i.method, i.target, i.headers, i.body);
  } catch (e) {
    f('no answer', (e as Error).message);
    return;
  }
  const shown = `${a.status} ${preview(a.text)}`;
  findings.outcome('http', `${target} ${a.status}`);
  if (a.status >= 500) f(`HTTP ${a.status} for a client's input`, shown);
  else if (!statuses.has(a.status)) f(`HTTP ${a.status} is not documented for it (documented: ${[...statuses].join(', ')})`, shown);
  if (i.method === 'HEAD') return; // no body, whatever the status
  if (a.status === 204) {
    if (a.text !== '') f('204 with a body', shown);
    return;
  }
  if (a.streamed) {
    const alt = route?.responses[a.status]?.alternative;
    if (!alt) f('a stream where the route documents none', shown);
    const lines = a.text.split('\n');
    lines.pop(); // the last, maybe cut, line
    for (const line of lines) {
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch {
        f('a stream line is not JSON', preview(line));
        continue;
      }
      if (alt && !alt.schema.safeParse(v).success) f('a stream line does not match the route\'s line schema', preview(line));
    }
    return;
  }
  // A documented non-JSON body (GET /metrics): its media type, not checked further here.
  const mediaType = route?.responses[a.status]?.mediaType;
  if (mediaType) {
    if (!String(a.headers['content-type'] ?? '').startsWith(mediaType)) f(`content-type ${a.headers['content-type']} is not the documented ${mediaType}`, shown);
    return;
  }
  if (!/^application\/json\b/.test(String(a.headers['content-type'] ?? ''))) f(`content-type ${a.headers['content-type']} is not JSON`, shown);
  let json: unknown;
  try {
    json = JSON.parse(a.text);
  } catch {
    f('the body is not JSON', shown);
    return;
  }
  // A 2xx, or another status whose body the route documents (GET /readyz's 503), matches the route's schema.
  if ((a.status >= 200 && a.status < 300) || (route?.responses[a.status]?.schema && route.responses[a.status]!.schema !== ApiError)) {
    const schema = route?.responses[a.status]?.schema;
    if (!schema) f('a 2xx without a documented schema', shown);
    else {
      const r = schema.safeParse(json);
      if (!r.success) f(`the body does not match the route's ${a.status} schema: ${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message}`, shown);
    }
  } else {
    const r = ApiError.safeParse(json);
    if (!r.success) f(`the error body is not {"error":{"code","message"}}: ${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message}`, shown);
  }
}

// ---------------------------------------------------------------------------------------------

/** Runs a fast-check property whose runs are batches of inputs sent together. */
async function runBatches<T>(surface: string, arb: fc.Arbitrary<T>, runs: number, batch: number, each: (x: T) => Promise<void>, after?: () => void): Promise<void> {
  loopDelay.reset();
  loopDelay.enable();
  try {
    await fc.assert(
    fc.asyncProperty(fc.array(arb, { minLength: batch, maxLength: batch }), async (xs) => {
      await Promise.all(xs.map(each));
      after?.();
    }),
    { seed: SEED, numRuns: runs, endOnFailure: true },
    );
  } finally {
    loopDelay.disable();
    lag[surface] = Math.round(loopDelay.max / 1e6);
  }
}

beforeAll(async () => {
  const missing = [...checkPrerequisites(['etcd', 'nats']), ...['unshare', 'nsenter', 'ip'].filter((t) => !which(t)).map((t) => `missing executable '${t}'`)];
  if (missing.length) throw new Error(`the fuzz suite needs root, etcd, nats-server, unshare, nsenter and ip:\n  - ${missing.join('\n  - ')}`);
  process.stdout.write(`fuzz: seed ${SEED} (set UNDERLAY_FUZZ_SEED to change it), scale ${SCALE}\n`);
  await ensureBuilt();
  env = await startEnv();
  controller = await env.controller({ apiToken: TOKEN });
  const anyNode = await env.client();
  nc = env.conns[env.conns.length - 1]!;
  maxPayload = nc.info?.max_payload ?? maxPayload;

  // Valid requests, as the integration tests' agents send them: node fz1 (and fz2) with a replica of fznet, an
  // endpoint each, and their pools and addresses.
  const def = { options: { parent: 'eth1' }, subnets: [{ subnet: '198.18.0.0/24', gateway: '198.18.0.1' }] };
  const j1 = await joinReplica(anyNode, { node: NODE, networkId: hex64(1), name: 'fznet' }, def, { requestId: 'req-1', endpointId: hex64(11) });
  const j2 = await joinReplica(anyNode, { node: OTHER, networkId: hex64(2), name: 'fznet' }, def, { requestId: 'req-2', endpointId: hex64(12) });
  const host = new FakeDockerHost(new RpcClient(nc, NODE), NODE);
  const a3 = await host.address(j1.poolId, 3);
  const poolIds = [j1.poolId, 'underlay/198.18.0.0/24', 'underlay/10.77.0.0/16'];
  const networkIds = [hex64(1), hex64(2), hex64(3)];
  const endpointIds = [hex64(11), hex64(12), hex64(13)];
  natsHints = {
    node: fc.constantFrom(NODE, OTHER),
    pool: cidr,
    subPool: fc.oneof(fc.constant(''), cidr),
    space: fc.constantFrom('underlay', 'underlay-global', 'vlan30'),
    poolId: fc.oneof(fc.constantFrom(...poolIds), cidr.map((c) => `underlay/${c}`)),
    poolIds: fc.array(fc.constantFrom(...poolIds), { maxLength: 3 }),
    address: ipAddress,
    options,
    networkId: dockerIdArb(networkIds),
    endpointId: dockerIdArb(endpointIds),
    requestId: fc.oneof(fc.uuid(), fc.constantFrom('req-1', 'req-2')),
    allocSeq: fc.oneof(fc.constant(a3.allocSeq), fc.integer({ min: 1, max: 200 })),
    name: fc.constantFrom('fznet', 'fznet2', 'other'),
    subnet: cidr,
    gateway: ipAddress,
    ipRange: cidr,
  };
  const report = joinedReport({ node: NODE, networkId: hex64(1), name: 'fznet' }, hex64(11), j1.cidr);
  methods = {
    requestPool: {
      req: RequestPoolReq,
      res: RequestPoolRes,
      examples: [
        { node: NODE, space: 'underlay', pool: '198.18.0.0/24', subPool: '', options: {}, v6: false },
        { node: NODE, space: 'underlay', pool: '10.77.0.0/16', subPool: '10.77.1.0/24', options: { block_size: '26' }, v6: false, requestId: 'pool-req-1' },
        { node: NODE, space: 'underlay', pool: 'fd00:77::/64', subPool: '', options: {}, v6: true },
      ],
    },
    releasePool: { req: ReleasePoolReq, res: EmptyRes, examples: [{ node: NODE, poolId: j1.poolId }, { node: NODE, poolId: 'underlay/10.77.0.0/16' }] },
    requestAddress: {
      req: RequestAddressReq,
      res: RequestAddressRes,
      examples: [
        { node: NODE, poolId: j1.poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': mac(9) } },
        { node: NODE, poolId: j1.poolId, address: '', options: GW },
        { node: NODE, poolId: j1.poolId, address: '198.18.0.77', options: {}, kind: 'aux' },
        { node: NODE, poolId: j1.poolId, address: '', options: {}, requestId: 'req-9', kind: 'endpoint' },
      ],
    },
    releaseAddress: {
      req: ReleaseAddressReq,
      res: EmptyRes,
      examples: [
        { node: NODE, poolId: j1.poolId, address: a3.address.split('/')[0], allocSeq: a3.allocSeq },
        { node: NODE, poolId: j1.poolId, address: j2.address },
      ],
    },
    bindEndpoint: {
      req: BindEndpointReq,
      res: BindEndpointRes,
      examples: [{ node: NODE, poolId: j1.poolId, address: a3.address.split('/')[0], allocSeq: a3.allocSeq, endpointId: hex64(13), networkId: hex64(1) }],
    },
    networkRecord: { req: NetworkRecordReq, res: EmptyRes, examples: [{ node: NODE, networkId: hex64(3), poolIds: [j1.poolId], options: { parent: 'eth1' } }] },
    networkName: {
      req: NetworkNameReq,
      res: NetworkNameRes,
      examples: [
        { node: NODE, networkId: hex64(1), name: 'fznet', definition: def },
        { node: NODE, networkId: hex64(3), name: 'fznet2', definition: { ...def, subnets: [{ subnet: '198.18.1.0/24' }] }, replica: false },
      ],
    },
    networkRemove: {
      req: NetworkRemoveReq,
      res: NetworkRemoveRes,
      examples: [
        { node: NODE, networkId: hex64(1), dryRun: true },
        { node: NODE, networkId: hex64(3), cluster: false },
        { node: NODE, networkId: hex64(2) },
      ],
    },
    nodeReport: { req: NodeReport, res: EmptyRes, examples: [report, { node: NODE, endpoints: [], leaseMs: 15_000 }] },
    readEvents: { req: ReadEventsReq, res: ReadEventsRes, examples: [{ fromSeq: 1, limit: 1000 }, { fromSeq: 5 }, { fromSeq: 1, chain: 'c' }] },
    eventsHead: { req: EventsHeadReq, res: EventsHeadRes, examples: [{}, { chains: ['c', 'p.underlay~2f192~2e0~2e2~2e0~2f24'] }] },
    eventsConsumer: { req: EventsConsumerReq, res: EventsConsumerRes, examples: [{ afterSeq: 0 }, { afterSeq: 3 }] },
    snapshotRead: { req: SnapshotReadReq, res: SnapshotReadRes, examples: [{ part: 0 }, { seq: 1, part: 0 }] },
    snapshotIndex: { req: SnapshotIndexReq, res: SnapshotIndexRes, examples: [{}] },
    snapshotRange: { req: SnapshotRangeReq, res: SnapshotRangeRes, examples: [{ seq: 1, start: 0, end: 10 }, { seq: 5, start: 100, end: 200 }] },
  };
});

afterAll(async () => {
  const routes = new Set(ROUTES.map((r) => `${r.method} ${r.path}`)).size;
  process.stdout.write(
    `fuzz: http ${findings.counts.get('http') ?? 0} inputs (${routes} routes), nats ${findings.counts.get('nats') ?? 0} inputs (${Object.keys(rpc).length} methods), plugin ${findings.counts.get('plugin') ?? 0} inputs (${PLUGIN_PATHS.length} paths); seed ${SEED}\n` +
      `fuzz: took ${Object.entries(took).map(([k, ms]) => `${k} ${(ms / 1000).toFixed(1)} s (event loop blocked up to ${lag[k] ?? '?'} ms)`).join(', ')}, ${((Date.now() - started) / 1000).toFixed(1)} s in all\n`,
  );
  if (process.env.UNDERLAY_FUZZ_VERBOSE) process.stdout.write(`${findings.outcomeReport()}\n`);
  httpAgent.destroy();
  if (agentNs) {
    await stopProcess(agentNs.agent, 'SIGTERM', 10_000).catch(() => undefined);
    await stopProcess(agentNs.proxy, 'SIGTERM', 5_000).catch(() => undefined);
    agentNs.relay.close();
    fs.rmSync(agentNs.dir, { recursive: true, force: true });
  }
  await env?.close();
});

describe('fuzz', () => {
  it('NATS: every RPC method answers every input with a valid reply, and the controller keeps its state consistent', async () => {
    const t0 = Date.now();
    // Generated inputs cover every method (checked below); the fixed oversized ones go first.
    for (const i of oversizedNatsInputs()) {
      const data = wire(i);
      if (data.byteLength > maxPayload - 1024) throw new Error(`fuzz bug: an oversized input of ${data.byteLength} bytes does not fit max_payload ${maxPayload}`);
      await natsCheck(i.method, i.token, data, i.body);
    }
    await runBatches('nats', natsInputs(), RUNS.nats, BATCH.nats, async (i) => {
      const data = wire(i);
      if (data.byteLength > maxPayload - 1024) return; // NATS itself refuses to send it
      await natsCheck(i.method, i.token, data, i.body);
    });
    took.nats = Date.now() - t0;
    expect([...(findings.targets.get('nats') ?? [])].sort()).toEqual(Object.keys(rpc).sort());

    // Still the leader, still answering, and the log folds to the same state with no address held twice.
    expect(controller.role).toBe('leader');
    const client = new RpcClient(nc, 'fzcheck');
    const host = new FakeDockerHost(client, 'fzcheck');
    const pool = await host.pool('fd0f:f022::/64');
    const a = await host.address(pool.poolId, 1);
    expect(a.address).toMatch(/^fd0f:f022::/);
    await controller.writer.settled();
    let refolded = await loadState(controller.log, controller.snaps);
    for (let i = 0; i < 20 && refolded.seq !== controller.writer.state.seq; i++) {
      await new Promise((r) => setTimeout(r, 100));
      await controller.writer.settled();
      refolded = await loadState(controller.log, controller.snaps);
    }
    expect(refolded.seq).toBe(controller.writer.state.seq);
    expect(JSON.stringify(describeState(refolded))).toBe(JSON.stringify(describeState(controller.writer.state)));
    expect(duplicateAddresses(controller.writer.state)).toEqual([]);
    expect(findings.report('nats') || 'no invalid answers').toBe('no invalid answers');
  });

  it('plugin socket: every path answers every input as libnetwork expects, and the agent stays alive', async () => {
    const t0 = Date.now();
    agentNs = await startAgentInNamespace(env.nats.port, fs.mkdtempSync(path.join(env.dir, 'agent-')));
    const sock = agentNs.socketPath;
    expect(Object.keys(pluginResults).sort()).toEqual([...PLUGIN_PATHS].sort());
    expect(Object.keys(pluginRequests).sort()).toEqual([...PLUGIN_PATHS].sort());
    const post = async (p: string, body: unknown) => {
      try {
        const a = await pluginPost(sock, p, Buffer.from(JSON.stringify(body)));
        return JSON.parse(a.text) as Record<string, any>;
      } catch (e) {
        throw new Error(`${p}: ${(e as Error).message}\n${agentNs!.agent.describe(60)}`);
      }
    };

    // A real network on the agent, as Docker makes one: pool, gateway, network (isolated: a dummy parent in the
    // namespace), an address, an endpoint, a join (a macvlan link in the namespace).
    const NET = hex64(0xa1);
    const EP = hex64(0xe1);
    const pool = await post('/IpamDriver.RequestPool', { AddressSpace: 'underlay', Pool: '100.72.0.0/24', SubPool: '', Options: {}, V6: false });
    expect(pool).toMatchObject({ PoolID: expect.any(String) });
    const gw = await post('/IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: { RequestAddressType: GW.RequestAddressType } });
    expect(gw).toMatchObject({ Address: '100.72.0.1/24' });
    const ipamData = [{ AddressSpace: 'underlay', Pool: '100.72.0.0/24', Gateway: gw.Address }];
    expect(await post('/NetworkDriver.CreateNetwork', { NetworkID: NET, Options: { [plugin.netlabel.generic]: { parent: PARENT } }, IPv4Data: ipamData, IPv6Data: [] })).toEqual({});
    const addr = await post('/IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: {} });
    expect(addr).toMatchObject({ Address: expect.stringMatching(/^100\.72\.0\.\d+\/24$/) });
    expect(await post('/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: addr.Address, AddressIPv6: '', MacAddress: '' }, Options: {} })).toMatchObject({ Interface: { MacAddress: expect.any(String) } });
    expect(await post('/NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/fuzz', Options: {} })).toMatchObject({ InterfaceName: { SrcName: expect.any(String), DstPrefix: 'eth' } });

    const ids = { NetworkID: NET, EndpointID: EP };
    const examples: Record<string, unknown[]> = {
      '/Plugin.Activate': [{}],
      '/AuthZPlugin.AuthZReq': [
        { User: 'root', RequestMethod: 'DELETE', RequestUri: '/v1.41/networks/fznet', RequestHeaders: {}, RequestBody: null },
        { RequestMethod: 'DELETE', RequestUri: `/networks/${NET}` },
        { RequestMethod: 'GET', RequestUri: '/v1.41/containers/json' },
      ],
      '/AuthZPlugin.AuthZRes': [{ RequestMethod: 'GET', RequestUri: '/v1.41/info', ResponseStatusCode: 200 }],
      '/NetworkDriver.GetCapabilities': [{}],
      '/NetworkDriver.CreateNetwork': [
        { NetworkID: hex64(0xa2), Options: { [plugin.netlabel.generic]: { parent: 'lo' } }, IPv4Data: ipamData, IPv6Data: [] },
        { NetworkID: hex64(0xa3), Options: { [plugin.netlabel.generic]: { parent: 'fz0.30', macvlan_mode: 'private' }, [plugin.netlabel.internal]: true }, IPv4Data: ipamData, IPv6Data: [] },
        { NetworkID: hex64(0xa4), Options: { [plugin.netlabel.generic]: { ipvlan_mode: 'l3' }, [plugin.netlabel.enableIPv6]: true }, IPv4Data: ipamData, IPv6Data: [{ AddressSpace: 'underlay', Pool: 'fd00:19::/64', Gateway: 'fd00:19::1/64' }] },
      ],
      '/NetworkDriver.DeleteNetwork': [{ NetworkID: NET }],
      '/NetworkDriver.CreateEndpoint': [{ ...ids, Interface: { Address: addr.Address, AddressIPv6: '', MacAddress: '' }, Options: {} }, { NetworkID: NET, EndpointID: hex64(0xe2), Interface: { Address: '198.19.0.9/24', AddressIPv6: 'fd00:19::9/64', MacAddress: '02:42:c6:13:00:09' } }],
      '/NetworkDriver.DeleteEndpoint': [ids],
      '/NetworkDriver.EndpointOperInfo': [ids],
      '/NetworkDriver.Join': [{ ...ids, SandboxKey: '/var/run/docker/netns/fuzz', Options: {} }],
      '/NetworkDriver.Leave': [ids],
      '/NetworkDriver.DiscoverNew': [{ DiscoveryType: 1, DiscoveryData: { Address: '198.51.100.1', self: true } }],
      '/NetworkDriver.DiscoverDelete': [{ DiscoveryType: 1, DiscoveryData: { Address: '198.51.100.1' } }],
      '/NetworkDriver.ProgramExternalConnectivity': [{ ...ids, Options: { 'com.docker.network.portmap': [] } }],
      '/NetworkDriver.RevokeExternalConnectivity': [ids],
      '/NetworkDriver.AllocateNetwork': [{ NetworkID: NET, Options: {}, IPv4Data: ipamData, IPv6Data: [] }],
      '/NetworkDriver.FreeNetwork': [{ NetworkID: NET }],
      '/IpamDriver.GetCapabilities': [{}],
      '/IpamDriver.GetDefaultAddressSpaces': [{}],
      '/IpamDriver.RequestPool': [
        { AddressSpace: 'underlay', Pool: '198.19.0.0/24', SubPool: '', Options: {}, V6: false },
        { AddressSpace: 'underlay', Pool: '198.19.8.0/22', SubPool: '198.19.9.0/24', Options: { block_size: '28' }, V6: false },
        { AddressSpace: 'underlay', Pool: '', SubPool: '', Options: {}, V6: true },
      ],
      '/IpamDriver.ReleasePool': [{ PoolID: pool.PoolID }],
      '/IpamDriver.RequestAddress': [
        { PoolID: pool.PoolID, Address: '', Options: {} },
        { PoolID: pool.PoolID, Address: '198.19.0.50', Options: {} },
        { PoolID: pool.PoolID, Address: '', Options: { RequestAddressType: GW.RequestAddressType } },
      ],
      '/IpamDriver.ReleaseAddress': [{ PoolID: pool.PoolID, Address: addr.Address.split('/')[0] }],
    };
    expect(Object.keys(examples).sort()).toEqual([...PLUGIN_PATHS].sort());

    const parent = fc.oneof(
      { weight: 3, arbitrary: fc.constant(PARENT) },
      fc.constantFrom('lo', 'lo.7', 'fz0', 'fz0.30', 'fz0.4094', 'fz0.4095', 'fz0.0', 'fz0.x', '.5', 'a.', 'eth1', 'dm-000000000000', 'x'.repeat(15), 'x'.repeat(16), ''),
      fc.stringMatching(/^[a-z]{1,6}[0-9]{0,2}(\.[0-9]{1,5})?$/),
      nastyString,
    );
    const hints: Hints = {
      NetworkID: dockerIdArb([NET, hex64(0xa2), hex64(0xa3)]),
      EndpointID: dockerIdArb([EP, hex64(0xe2)]),
      PoolID: fc.oneof(fc.constant(pool.PoolID as string), cidr.map((c) => `underlay/${c}`)),
      Pool: cidr,
      SubPool: fc.oneof(fc.constant(''), cidr),
      Gateway: fc.oneof(ipAddress, cidr),
      Address: fc.oneof(ipAddress, cidr),
      AddressIPv6: fc.oneof(fc.constant(''), ipv6.map((a) => `${a}/64`)),
      MacAddress: fc.oneof(fc.constant(''), macArb),
      AddressSpace: fc.constantFrom('underlay', 'underlay-global', 'default', ''),
      Options: fc.oneof(options, fc.record({ [plugin.netlabel.generic]: fc.record({ parent, macvlan_mode: fc.constantFrom('bridge', 'private', 'vepa', 'passthru', 'x'), type: fc.constantFrom('macvlan', 'ipvlan', 'bridge') }, { requiredKeys: [] }) })),
      RequestMethod: fc.constantFrom('DELETE', 'GET', 'POST', 'delete'),
      RequestUri: fc.oneof(fc.constantFrom('/networks/fznet', `/v1.41/networks/${NET}`, '/v1.41/networks/%zz', '/networks/', '/v1.41/networks/a/b', '/networks/%'), nastyString.map((s) => `/networks/${s}`)),
    };

    // Whole lifecycles with generated driver options: CreateNetwork … DeleteNetwork on a fresh network.
    const lifecycle = fc.record({
      n: fc.stringMatching(/^[0-9a-f]{64}$/),
      e: fc.stringMatching(/^[0-9a-f]{64}$/),
      // Mostly coherent driver options (so most lifecycles get to the links), sometimes any mix of them.
      generic: fc.oneof(
        { weight: 3, arbitrary: fc.record({ parent, macvlan_mode: fc.constantFrom('bridge', 'private', 'vepa', 'passthru') }, { requiredKeys: ['parent'] }) },
        { weight: 1, arbitrary: fc.record({ parent, type: fc.constant('ipvlan'), ipvlan_mode: fc.constantFrom('l2', 'l3', 'l3s'), ipvlan_flag: fc.constantFrom('bridge', 'private', 'vepa') }, { requiredKeys: ['parent', 'type'] }) },
        {
          weight: 1,
          arbitrary: fc.record(
            {
              parent,
              host_iface: parent,
              macvlan_mode: fc.oneof(fc.constantFrom('bridge', 'private', 'vepa', 'passthru'), nastyString),
              ipvlan_mode: fc.oneof(fc.constantFrom('l2', 'l3', 'l3s'), nastyString),
              ipvlan_flag: fc.oneof(fc.constantFrom('bridge', 'private', 'vepa'), nastyString),
              type: fc.constantFrom('macvlan', 'ipvlan', 'x'),
            },
            { requiredKeys: [] },
          ),
        },
      ),
      internal: fc.boolean(),
      o: octet,
      host: fc.integer({ min: 2, max: 254 }),
      mac: fc.option(macArb, { nil: '' }),
    });
    const runLifecycle = async (l: typeof lifecycle extends fc.Arbitrary<infer T> ? T : never) => {
      const data = [{ AddressSpace: 'underlay', Pool: `198.19.${l.o}.0/24`, Gateway: `198.19.${l.o}.1/24` }];
      const netIds = { NetworkID: l.n, EndpointID: l.e };
      await pluginCheck(sock, '/NetworkDriver.CreateNetwork', { NetworkID: l.n, Options: { [plugin.netlabel.generic]: l.generic, [plugin.netlabel.internal]: l.internal }, IPv4Data: data, IPv6Data: [] });
      await pluginCheck(sock, '/NetworkDriver.CreateEndpoint', { ...netIds, Interface: { Address: `198.19.${l.o}.${l.host}/24`, AddressIPv6: '', MacAddress: l.mac }, Options: {} });
      await pluginCheck(sock, '/NetworkDriver.Join', { ...netIds, SandboxKey: '/var/run/docker/netns/fz', Options: {} });
      await pluginCheck(sock, '/NetworkDriver.EndpointOperInfo', netIds);
      await pluginCheck(sock, '/NetworkDriver.Leave', netIds);
      await pluginCheck(sock, '/NetworkDriver.DeleteEndpoint', netIds);
      await pluginCheck(sock, '/NetworkDriver.DeleteNetwork', { NetworkID: l.n });
    };

    type PluginInput = { kind: 'call'; p: string; body?: unknown; raw?: Uint8Array; method: string } | { kind: 'lifecycle'; l: typeof lifecycle extends fc.Arbitrary<infer T> ? T : never };
    const call = fc.constantFrom(...PLUGIN_PATHS).chain((p) => {
      const ex = fc.constantFrom(...examples[p]!);
      return fc.oneof(
        { weight: 4, arbitrary: mutated(ex).map((body) => ({ kind: 'call' as const, p, body, method: 'POST' })) },
        { weight: 3, arbitrary: fromSchema(pluginRequests[p]!, hints).map((body) => ({ kind: 'call' as const, p, body, method: 'POST' })) },
        { weight: 1, arbitrary: ex.map((body) => ({ kind: 'call' as const, p, body, method: 'POST' })) },
        { weight: 2, arbitrary: rawBody.map((raw) => ({ kind: 'call' as const, p, raw, method: 'POST' })) },
      );
    });
    const stray = fc
      .record({
        p: fc.oneof(fc.constantFrom('/', '/Plugin.Nope', '/NetworkDriver.', '/IpamDriver.Nope', '/NetworkDriver.Join/x', '//Plugin.Activate', '/plugin.activate'), nastyString.map((s) => `/${uriEncode(s)}`)),
        method: fc.constantFrom('POST', 'GET', 'PUT'),
        raw: rawBody,
      })
      .map(({ p, method, raw }) => ({ kind: 'call' as const, p, raw, method }));
    const wrongMethod = fc.constantFrom(...PLUGIN_PATHS).map((p) => ({ kind: 'call' as const, p, raw: Buffer.from('{}'), method: 'GET' }));
    const inputs: fc.Arbitrary<PluginInput> = fc.oneof(
      { weight: 14, arbitrary: call },
      { weight: 3, arbitrary: lifecycle.map((l) => ({ kind: 'lifecycle' as const, l })) },
      { weight: 1, arbitrary: stray },
      { weight: 1, arbitrary: wrongMethod },
    );
    // Bodies at and over the socket's 1 MiB limit.
    for (const p of ['/NetworkDriver.CreateNetwork', '/IpamDriver.RequestPool', '/NetworkDriver.Join']) {
      await pluginCheck(sock, p, undefined, Buffer.from(JSON.stringify({ ...(examples[p]![0] as object), padding: 'x'.repeat(1024 * 1024 - 300) })));
      await pluginCheck(sock, p, undefined, Buffer.alloc(1024 * 1024 + 10, 0x20));
      await pluginCheck(sock, p, undefined, Buffer.from(`${'['.repeat(500_000)}${']'.repeat(500_000)}`));
    }
    await runBatches(
      'plugin',
      inputs,
      RUNS.plugin,
      BATCH.plugin,
      async (i) => {
        if (i.kind === 'lifecycle') await runLifecycle(i.l);
        else await pluginCheck(sock, i.p, i.body, i.raw, i.method);
      },
      () => {
        if (!agentNs!.agent.isRunning()) throw new Error(`the agent stopped:\n${agentNs!.agent.describe()}`);
      },
    );
    took.plugin = Date.now() - t0;
    expect([...(findings.targets.get('plugin') ?? [])].filter((t) => t.startsWith('/')).sort()).toEqual([...PLUGIN_PATHS].sort());
    // Alive, answering, and nothing went unhandled.
    expect(agentNs.agent.isRunning()).toBe(true);
    expect(await post('/Plugin.Activate', {})).toEqual({ Implements: expect.arrayContaining(['NetworkDriver', 'IpamDriver']) });
    const log = fs.readFileSync(agentNs.agent.logFile, 'utf8');
    expect(log.match(/unhandled promise rejection.*/g) ?? []).toEqual([]);
    expect(findings.report('plugin') || 'no invalid answers').toBe('no invalid answers');
  });

  it('HTTP: every route answers every input with a documented status and a valid JSON body, and the controller stays healthy', async () => {
    const t0 = Date.now();
    const port = controller.httpAddress!.port;
    await runBatches('http', httpInputs(['fznet', 'fznet2', 'nothere']), RUNS.http, BATCH.http, (i) => httpCheck(port, i));
    took.http = Date.now() - t0;
    expect([...(findings.targets.get('http') ?? [])].filter((t) => t !== 'no route').sort()).toEqual(ROUTES.map((r) => `${r.method} ${r.path}`).sort());
    expect(findings.report('http') || 'no invalid answers').toBe('no invalid answers');
    const h = await httpCall(port, 'GET', '/healthz', {});
    expect(h.status).toBe(200);
    expect(JSON.parse(h.text)).toMatchObject({ ok: true, role: 'leader' });
  });
});
