/**
 * One `docker run` as one trace, from real processes: a lab host h1 with a real dockerd and agent process, and a
 * controller process (the compiled CLI) leading the cluster, both exporting OTLP/JSON over HTTP to a receiver in
 * this test (on the lab bridge, reachable from the host's namespace). The trace of the container's RequestAddress
 * holds the agent's plugin spans (RequestAddress, CreateEndpoint, Join), the agent's NATS request spans, the
 * controller's process, decide and commit spans, and the macvlan link's netlink span. The network (a cluster
 * network) gets its replica on h2: that agent's `apply event` span (CONSUMER) is linked to the trace that created
 * the network, with the Docker API call under it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BUSYBOX_IMAGE, withLab } from '../lab';
import { stopProcess, type Proc } from '../lab/spawn';
import { freePort, httpGet } from '../lab/probes';
import { waitFor } from '../lab/wait';
import { containerIp, startCluster, type Cluster } from './support/cluster';
import { KIND, otelEnv, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../otlp/receiver';
import { CLI } from './support/cluster';

jest.setTimeout(240_000);
/** Measured here: a controller process leads ~1.5 s after the in-process one steps down (lease TTL 2 s); spans arrive within 1 s. */
const TAKEOVER_MS = 30_000;
const SPANS_MS = 15_000;

const ctx = withLab({ hosts: ['h1', 'h2'] });
let cluster: Cluster;
let receiver: OtlpReceiver;
let controller: Proc | undefined;

beforeAll(async () => {
  receiver = await startOtlpReceiver(ctx.lab.bridgeAddress);
  const otel = otelEnv(receiver.endpoint);
  cluster = await startCluster(ctx.lab, [ctx.host('h1'), ctx.host('h2')], { agentEnv: otel, agentArgs: ['--reconcile-interval-ms', '1000'] });
  // The traced controller is a process of its own: the cluster's in-process one steps down for it.
  await cluster.controller.stop();
  const port = await freePort();
  const creds = await cluster.credsFile('traced', { controller: true });
  controller = ctx.lab.spawn(
    process.execPath,
    [CLI, 'controller', '--etcd', cluster.etcdUrl, '--nats', cluster.natsUrl, '--listen', `127.0.0.1:${port}`, '--name', 'traced', '--api-token', 'tracing-e2e-token-0123456789', ...(creds ? ['--nats-creds', creds] : [])],
    { name: 'controller-traced', env: { ...process.env, ...otel } },
  );
  await waitFor(
    async () => {
      if (!controller!.isRunning()) throw new Error(`the traced controller exited: ${controller!.describe()}`);
      try {
        return JSON.parse((await httpGet(`http://127.0.0.1:${port}/healthz`, 1_000)).body).role === 'leader';
      } catch {
        return false;
      }
    },
    { timeoutMs: TAKEOVER_MS, intervalMs: 100, what: 'the traced controller process to take over as leader' },
  );
}, 300_000);

afterAll(async () => {
  if (controller) await stopProcess(controller, 'SIGTERM', 10_000).catch(() => {});
  await receiver?.close();
});

describe('tracing across the agent and the controller', () => {
  it('shows one docker run as one trace: plugin spans on h1, the controller\'s decision and commit', async () => {
    const { docker: d } = cluster.nodes.get('h1')!;
    await d.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '198.18.7.0/24', '--gateway', '198.18.7.1', '-o', 'parent=eth1', 'tn']);
    const t0 = Date.now();
    await d.dockerOk(['run', '-d', '--name', 'traced1', '--network', 'tn', BUSYBOX_IMAGE, 'sleep', '600']);
    const runMs = Date.now() - t0;
    const ip = await containerIp(d, 'traced1', 'tn');
    expect(ip).toMatch(/^198\.18\.7\.\d+$/);

    const agent = (name: string) => (s: ReceivedSpan) => s.service === 'underlay-agent' && s.instance === 'h1' && s.name === name;
    // The RequestAddress that handed out the container's address starts the trace.
    const req = await receiver.waitFor(`agent span docker RequestAddress for ${ip}`, (s) => agent('docker RequestAddress')(s) && String(s.attributes['underlay.address']).split('/')[0] === ip, SPANS_MS);
    const trace = req.traceId;
    const inTrace = (s: ReceivedSpan) => s.traceId === trace;
    const create = await receiver.waitFor('docker CreateEndpoint in that trace', (s) => agent('docker CreateEndpoint')(s) && inTrace(s), SPANS_MS);
    const join = await receiver.waitFor('docker Join in that trace', (s) => agent('docker Join')(s) && inTrace(s), SPANS_MS);
    expect(create.parentSpanId).toBe(req.spanId);
    expect(join.parentSpanId).toBe(create.spanId);
    expect(req.kind).toBe(KIND.server);
    // The agent's NATS request, and the controller's spans under it.
    const client = receiver.spans.find((s) => inTrace(s) && s.parentSpanId === req.spanId && s.kind === KIND.client)!;
    expect(client.attributes).toMatchObject({ 'messaging.system': 'nats', 'underlay.node': 'h1' });
    const proc = await receiver.waitFor('controller process requestAddress', (s) => s.service === 'underlay-controller' && s.name === 'process requestAddress' && s.parentSpanId === client.spanId, SPANS_MS);
    expect(proc.instance).toBe('traced');
    await receiver.waitFor('controller decide requestAddress', (s) => s.name === 'decide requestAddress' && s.parentSpanId === proc.spanId, SPANS_MS);
    await receiver.waitFor('controller commit of that request', (s) => s.name === 'commit' && inTrace(s) && s.links.some((l) => l.spanId === proc.spanId), SPANS_MS);
    // Every span of the trace lies within the docker run (plus the export's clock: same host).
    const spans = receiver.spans.filter(inTrace);
    const names = new Set(spans.map((s) => `${s.service}:${s.name}`));
    for (const n of ['underlay-agent:docker RequestAddress', 'underlay-agent:docker CreateEndpoint', 'underlay-agent:docker Join', 'underlay-controller:process requestAddress', 'underlay-controller:decide requestAddress', 'underlay-controller:commit']) {
      expect(names).toContain(n);
    }
    const start = spans.reduce((m, s) => (s.startNs < m ? s.startNs : m), spans[0]!.startNs);
    const end = spans.reduce((m, s) => (s.endNs > m ? s.endNs : m), 0n);
    expect(Number(end - start) / 1e6).toBeLessThanOrEqual(runMs + 1_000);
    await receiver.waitFor('netlink createMacvlan under docker Join', (s) => agent('netlink createMacvlan')(s) && s.parentSpanId === join.spanId, SPANS_MS);
    fs.writeFileSync(path.join(ctx.lab.dir, 'docker-run-trace.txt'), spans.map((s) => `${s.service} ${s.name} ${s.spanId} <- ${s.parentSpanId ?? '-'}`).join('\n'));
    await d.dockerOk(['rm', '-f', 'traced1']);
  });

  it('links the replica\'s apply event span on h2 to the trace that created the network on h1', async () => {
    const applied = await receiver.waitFor(
      'apply event for network tn on h2',
      (s) => s.service === 'underlay-agent' && s.instance === 'h2' && s.name === 'apply event' && s.attributes['underlay.network'] === 'tn',
      SPANS_MS,
    );
    expect(applied.kind).toBe(KIND.consumer);
    expect(applied.links.length).toBe(1);
    const linked = applied.links[0]!.traceId;
    // That trace began on h1 (a plugin call or a request of its agent) and holds the controller's decision.
    expect(receiver.spans.some((s) => s.traceId === linked && s.service === 'underlay-agent' && s.instance === 'h1')).toBe(true);
    expect(receiver.spans.some((s) => s.traceId === linked && s.service === 'underlay-controller' && s.name.startsWith('decide '))).toBe(true);
    await receiver.waitFor('docker api createNetwork under it', (s) => s.instance === 'h2' && s.name === 'docker api createNetwork' && s.parentSpanId === applied.spanId, SPANS_MS);
    await cluster.nodes.get('h1')!.docker.dockerOk(['network', 'rm', 'tn']);
  });
});
