/**
 * Traces from a real controller process (the compiled CLI, real etcd and NATS) exported as OTLP/JSON over HTTP to
 * a receiver in this test. A request sent with a W3C traceparent gives, in that trace: the controller's
 * `process <method>` span (a child of the caller's span), its `decide <method>` span, the `commit` span of the
 * etcd transaction (linked to the request's span) and the `publish` span; the event it made stores that trace id.
 * An HTTP API request with a traceparent gets a SERVER span in the caller's trace. A controller with no exporter
 * endpoint exports nothing; `http/protobuf` and `grpc` exports arrive too (counted, not decoded).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RequestAddressRes, RequestPoolRes, ReadEventsRes, rpcSubject } from '@underlay/core';
import type { RpcClient } from '@underlay/adapters';
import { startEnv, type Env } from './support';
import { CLI, ensureBuilt } from '../e2e/support/cluster';
import { spawnLogged, stopProcess, type Proc } from '../lab/spawn';
import { freePort, httpGet } from '../lab/probes';
import { waitFor } from '../lab/wait';
import { KIND, otelEnv, startOtlpGrpcReceiver, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../otlp/receiver';

jest.setTimeout(120_000);

const TOKEN = 'tracing-test-token-0123456789';
/** Measured: a controller process leads within ~1.5 s here; spans arrive within the batch delay (100 ms) plus an export. */
const LEADER_MS = 20_000;
const SPANS_MS = 10_000;

let env: Env;
let receiver: OtlpReceiver;
let rpc: RpcClient;
const procs: Proc[] = [];

/** The environment of a controller process: ours without OTEL_* or UNDERLAY_*, plus `extra`. */
function procEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('OTEL_') && !k.startsWith('UNDERLAY_')) e[k] = v;
  return { ...e, ...extra };
}

async function startController(name: string, extraEnv: Record<string, string>): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const proc = spawnLogged(process.execPath, [CLI, 'controller', '--etcd', env.etcd.url, '--nats', env.nats.url, '--listen', `127.0.0.1:${port}`, '--name', name, '--api-token', TOKEN], {
    name,
    logFile: path.join(env.dir, `${name}.log`),
    env: procEnv(extraEnv),
  });
  procs.push(proc);
  await waitFor(
    async () => {
      if (!proc.isRunning()) throw new Error(`controller ${name} exited: ${proc.describe()}`);
      try {
        return JSON.parse((await httpGet(`http://127.0.0.1:${port}/healthz`, 1_000)).body).role === 'leader';
      } catch {
        return false;
      }
    },
    { timeoutMs: LEADER_MS, intervalMs: 50, what: `controller ${name} to lead` },
  );
  return { proc, port };
}

/** The log's events (seq and stored trace id). */
async function readEvents(): Promise<{ seq: number; traceId?: string }[]> {
  const { events } = await rpc.call('readEvents', { fromSeq: 1, limit: 1000 }, ReadEventsRes);
  return events as { seq: number; traceId?: string }[];
}

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CALLER = '00f067aa0ba902b7';

beforeAll(async () => {
  await ensureBuilt();
  env = await startEnv();
  receiver = await startOtlpReceiver();
  rpc = await env.client();
});
afterAll(async () => {
  for (const p of procs) await stopProcess(p, 'SIGKILL', 2_000).catch(() => {});
  await receiver?.close();
  await env?.close();
});

describe('a traced controller process', () => {
  let c1: { proc: Proc; port: number };
  beforeAll(async () => {
    c1 = await startController('c1', otelEnv(receiver.endpoint));
  });

  it('puts process, decide and commit spans of a request in the caller\'s trace; the commit links the request', async () => {
    const tp = `00-${TRACE}-${CALLER}-01`;
    const pool = await rpc.call('requestPool', { node: 'h1', space: 'underlay', pool: '10.77.0.0/16', subPool: '', options: {}, v6: false }, RequestPoolRes, { traceparent: tp });
    const addr = await rpc.call('requestAddress', { node: 'h1', poolId: pool.poolId, address: '', options: {} }, RequestAddressRes, { traceparent: tp });
    expect(addr.address).toMatch(/^10\.77\./);
    const inTrace = (name: string) => (s: ReceivedSpan) => s.traceId === TRACE && s.name === name;
    const proc = await receiver.waitFor('process requestAddress', inTrace('process requestAddress'), SPANS_MS);
    const decide = await receiver.waitFor('decide requestAddress', (s) => inTrace('decide requestAddress')(s) && s.parentSpanId === proc.spanId, SPANS_MS);
    const commit = await receiver.waitFor('commit linked to process requestAddress', (s) => s.name === 'commit' && s.links.some((l) => l.spanId === proc.spanId), SPANS_MS);
    await receiver.waitFor('publish after that commit', (s) => s.name === 'publish' && s.parentSpanId === commit.spanId, SPANS_MS);
    expect(proc.parentSpanId).toBe(CALLER);
    expect(proc.kind).toBe(KIND.server);
    expect(proc.service).toBe('underlay-controller');
    expect(proc.instance).toBe('c1');
    expect(proc.attributes).toMatchObject({ 'messaging.system': 'nats', 'messaging.destination.name': rpcSubject('requestAddress', 'h1'), 'underlay.node': 'h1' });
    expect(decide.attributes['underlay.seq']).toEqual(expect.any(Number));
    expect(commit.traceId).toBe(TRACE);
    expect(commit.parentSpanId).toBe(proc.spanId);
    expect(commit.attributes['underlay.seq']).toEqual(expect.any(Number));
    // The event this request made stores the trace id of these spans.
    const events = await readEvents();
    const made = events.filter((e) => e.seq === commit.attributes['underlay.seq']);
    expect(made).toHaveLength(1);
    expect(made[0]!.traceId).toBe(TRACE);
  });

  it('gives an HTTP API request with a traceparent a SERVER span in that trace', async () => {
    const trace = 'aaaabbbbccccddddeeeeffff00001111';
    const r = await fetch(`http://127.0.0.1:${c1.port}/v1/networks`, { headers: { authorization: `Bearer ${TOKEN}`, traceparent: `00-${trace}-1111222233334444-01` } });
    expect(r.status).toBe(200);
    const span = await receiver.waitFor('GET /v1/networks', (s) => s.traceId === trace && s.kind === KIND.server, SPANS_MS);
    expect(span.name).toBe('GET /v1/networks');
    expect(span.parentSpanId).toBe('1111222233334444');
    expect(span.attributes['http.response.status_code']).toBe(200);
  });

  it('exports what it holds when it stops (SIGTERM flushes the exporter)', async () => {
    await stopProcess(c1.proc, 'SIGTERM', 10_000);
    expect(c1.proc.exitInfo()?.code).toBe(0);
    // A controller whose batches would wait 10 minutes: only the flush at stop can send its spans.
    const slow = await startController('c4', { ...otelEnv(receiver.endpoint), OTEL_BSP_SCHEDULE_DELAY: '600000' });
    const trace = 'c'.repeat(32);
    await rpc.call('requestPool', { node: 'h2', space: 'underlay', pool: '10.78.0.0/16', subPool: '', options: {}, v6: false }, RequestPoolRes, { traceparent: `00-${trace}-${CALLER}-01` });
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.spans.some((s) => s.traceId === trace)).toBe(false);
    await stopProcess(slow.proc, 'SIGTERM', 10_000);
    expect(slow.proc.exitInfo()?.code).toBe(0);
    expect(receiver.spans.filter((s) => s.traceId === trace).map((s) => s.name)).toEqual(expect.arrayContaining(['process requestPool', 'decide requestPool', 'commit']));
  });

  it('logged JSON lines (level, service, instance, msg), its stop included', () => {
    const lines = fs.readFileSync(c1.proc.logFile, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const p of parsed) expect(p).toMatchObject({ service: 'underlay-controller', instance: 'c1', level: expect.stringMatching(/^(debug|info|warn|error)$/), msg: expect.any(String) });
    expect(parsed.some((p) => /^leader \(term \d+\)/.test(String(p.msg)))).toBe(true);
    expect(parsed.some((p) => p.msg === 'SIGTERM: stopping')).toBe(true);
  });
});

describe('a controller process with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf', () => {
  it('exports OTLP/protobuf to the same endpoint', async () => {
    const proto = await startOtlpReceiver();
    let proc: Proc | undefined;
    try {
      ({ proc } = await startController('c5', { ...otelEnv(proto.endpoint), OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }));
      await rpc.call('requestPool', { node: 'h5', space: 'underlay', pool: '10.81.0.0/16', subPool: '', options: {}, v6: false }, RequestPoolRes, { traceparent: `00-${'f'.repeat(32)}-${CALLER}-01` });
      await waitFor(() => proto.protobufBodies > 0, { timeoutMs: SPANS_MS, intervalMs: 20, what: 'an OTLP/protobuf export from c5' });
      expect(proto.rejected).toBe(0);
    } finally {
      if (proc) await stopProcess(proc, 'SIGTERM', 10_000);
      await proto.close();
    }
  });
});

describe('a controller process with OTEL_EXPORTER_OTLP_PROTOCOL=grpc', () => {
  it('exports over OTLP/gRPC', async () => {
    const g = await startOtlpGrpcReceiver();
    let proc: Proc | undefined;
    try {
      ({ proc } = await startController('c6', { ...otelEnv(g.endpoint), OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }));
      await rpc.call('requestPool', { node: 'h6', space: 'underlay', pool: '10.82.0.0/16', subPool: '', options: {}, v6: false }, RequestPoolRes, { traceparent: `00-${'9'.repeat(32)}-${CALLER}-01` });
      await waitFor(() => g.exports > 0, { timeoutMs: SPANS_MS, intervalMs: 20, what: 'an OTLP/gRPC export from c6' });
      expect(g.bytes).toBeGreaterThan(0);
    } finally {
      if (proc) await stopProcess(proc, 'SIGTERM', 10_000);
      await g.close();
    }
  });
});

describe.each([
  ['no exporter endpoint', (_endpoint: string) => ({ OTEL_TRACES_SAMPLER: 'always_on', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })],
  ['OTEL_SDK_DISABLED=true', (endpoint: string) => ({ ...otelEnv(endpoint), OTEL_SDK_DISABLED: 'true' })],
])('a controller process with %s', (what, envOf) => {
  it('starts no SDK, exports nothing, and still stores the caller\'s trace id in its events', async () => {
    const off = await startOtlpReceiver();
    let proc: Proc | undefined;
    try {
      ({ proc } = await startController(what.startsWith('no') ? 'c2' : 'c3', envOf(off.endpoint)));
      expect(proc.logTail(200)).not.toMatch(/tracing on/);
      const trace = what.startsWith('no') ? 'dddddddddddddddddddddddddddddddd' : 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee';
      const pool = await rpc.call('requestPool', { node: what.startsWith('no') ? 'h3' : 'h4', space: 'underlay', pool: what.startsWith('no') ? '10.79.0.0/16' : '10.80.0.0/16', subPool: '', options: {}, v6: false }, RequestPoolRes, { traceparent: `00-${trace}-${CALLER}-01` });
      expect(pool.poolId).toBeTruthy();
      const events = await readEvents();
      expect(events.some((e) => e.traceId === trace)).toBe(true);
      await new Promise((r) => setTimeout(r, 500)); // several batch delays
      expect(off.requests).toBe(0);
    } finally {
      // The next controller is to lead.
      if (proc) await stopProcess(proc, 'SIGTERM', 10_000);
      await off.close();
    }
  });
});

describe('a controller process with --log-format text (UNDERLAY_LOG_FORMAT)', () => {
  it('logs text lines: time, level, who, message', async () => {
    const { proc } = await startController('c7', { UNDERLAY_LOG_FORMAT: 'text' });
    await stopProcess(proc, 'SIGTERM', 10_000);
    const lines = fs.readFileSync(proc.logFile, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toMatch(/^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] (DEBUG|INFO|WARN|ERROR): controller c7: /);
    expect(lines.some((l) => l.endsWith('INFO: controller c7: SIGTERM: stopping'))).toBe(true);
  });
});
