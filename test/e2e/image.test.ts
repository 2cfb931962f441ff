/**
 * Issue 13's image acceptance: underlay's image (the repository's Dockerfile, built offline on a Node 20 base made
 * from this machine's own files: test/lab/image.ts) runs the whole cluster in containers, in the shape of the Helm
 * chart — the controller as a container (non-root, its HTTP API on h1's network), and on each host's dockerd an
 * agent container with host network, NET_ADMIN and NET_RAW (not privileged), the plugin directory, the Docker socket
 * and the state directory mounted, its NATS credentials at /etc/underlay/nats/node.creds. Both run with exactly the
 * arguments of deploy/container-args.json (the chart's DaemonSet and Deployment use the same). The two-host
 * scenario passes: a network made with `docker network create -d underlay` on h1 appears on h2, containers on h1
 * and h2 get distinct addresses and ping each other; the image's HEALTHCHECK reports both services healthy.
 *
 * Budgets: the image build and its copy to h2 are lab steps with measured budgets ('image build', 'image load' in
 * test/lab/budgets.json); a container's health needs its first check (interval 10 s): 60 s, named in the failure.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { controllerCreds, initNatsKeys, natsServerConfig, nodeCreds, writePrivateFile } from '@underlay/adapters';
import {
  BUSYBOX_IMAGE,
  buildUnderlayImage,
  copyImage,
  importBusybox,
  startDockerd,
  startLabEtcd,
  startLabNats,
  waitFor,
  withLab,
  type Dockerd,
  type LabHost,
} from '../lab';
import { ROOT, containerIp, ensureBuilt } from './support/cluster';
import { httpGet } from '../lab/probes';

jest.setTimeout(1_500_000);
const ctx = withLab({ hosts: ['h1', 'h2'] });

const ARGS = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/container-args.json'), 'utf8')) as { agent: string[]; controller: string[] };
const fill = (args: string[], values: Record<string, string>) => args.map((a) => a.replace(/\{\{(\w+)\}\}/g, (_, k: string) => values[k] ?? `{{${k}}}`));
const TOKEN = 'image-test-token-0123456789abcdef';

let docker: Map<string, Dockerd>;
let image: string;
let controllerUrl: string;

/** waitFor, and on a timeout the container's log (or state) in the error. */
async function waitOr<T>(predicate: () => T | Promise<T>, opts: { timeoutMs: number; intervalMs?: number; what: string }, context: () => Promise<string>): Promise<void> {
  try {
    await waitFor(predicate, opts);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${await context().catch((x: Error) => x.message)}`);
  }
}

const logsOf = (d: Dockerd, c: string) => async () => d.docker(['logs', '--tail', '40', c]).then((r) => r.stdout + r.stderr);

async function health(d: Dockerd, name: string): Promise<string> {
  return (await d.dockerOk(['inspect', '--format', '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}', name])).trim();
}

beforeAll(async () => {
  await ensureBuilt();
  const lab = ctx.lab;
  const keys = await initNatsKeys(path.join(lab.dir, 'keys'));
  const [etcd, nats] = await Promise.all([startLabEtcd(lab), startLabNats(lab, { config: natsServerConfig(keys) })]);
  docker = new Map();
  for (const h of ['h1', 'h2']) {
    const d = await startDockerd(lab, ctx.host(h), { storageDriver: 'overlay2' }); // the image is ~200 MB: vfs copies it per layer and container
    await importBusybox(d);
    docker.set(h, d);
  }
  const d1 = docker.get('h1')!;
  image = await buildUnderlayImage(d1);
  await copyImage(d1, docker.get('h2')!, image);

  // The controller: a container on h1's network, as uid 10001 (the image's user), with its creds and token file.
  const etc = path.join(lab.dir, 'etc-controller');
  for (const sub of ['nats', 'api']) fs.mkdirSync(path.join(etc, sub), { recursive: true });
  writePrivateFile(path.join(etc, 'nats/controller.creds'), await controllerCreds(keys, 'c1'));
  writePrivateFile(path.join(etc, 'api/tokens'), `e2e ${TOKEN}\n`);
  for (const f of ['nats', 'nats/controller.creds', 'api', 'api/tokens']) fs.chownSync(path.join(etc, f), 10001, 10001);
  const controllerArgs = fill(ARGS.controller, { NAME: 'c1', ETCD_ENDPOINTS: etcd.url, NATS_URL: nats.url });
  await d1.dockerOk(['run', '-d', '--name', 'underlay-controller', '--network', 'host', '--read-only', '-v', `${etc}:/etc/underlay:ro`, image, ...controllerArgs]);
  controllerUrl = `http://${ctx.host('h1').address}:7410`;
  await waitOr(
    async () => {
      try {
        return JSON.parse((await httpGet(`${controllerUrl}/healthz`, 1_000)).body).role === 'leader';
      } catch {
        return false;
      }
    },
    { timeoutMs: 30_000, intervalMs: 200, what: 'the controller container to lead' },
    logsOf(d1, 'underlay-controller'),
  );

  // An agent per host: host network, NET_ADMIN + NET_RAW, the DaemonSet's mounts.
  for (const [name, d] of docker) await startAgentContainer(ctx.host(name), d, await nodeCreds(keys, name), nats.url);
}, 1_500_000);

async function startAgentContainer(h: LabHost, d: Dockerd, creds: string, natsUrl: string): Promise<void> {
  const etc = path.join(ctx.lab.dir, `etc-${h.name}`);
  fs.mkdirSync(path.join(etc, 'nats'), { recursive: true });
  writePrivateFile(path.join(etc, 'nats/node.creds'), creds);
  const state = path.join(ctx.lab.dir, `state-${h.name}`);
  fs.mkdirSync(state, { recursive: true });
  const args = fill(ARGS.agent, { NODE: h.name, NATS_URL: natsUrl });
  await d.dockerOk([
    'run', '-d', '--name', 'underlay-agent', '--user', '0', '--network', 'host', '--cap-drop', 'ALL', '--cap-add', 'NET_ADMIN', '--cap-add', 'NET_RAW',
    '-v', '/run/docker/plugins:/run/docker/plugins', '-v', `${d.sock}:/var/run/docker.sock`, '-v', `${state}:/var/lib/underlay`, '-v', `${etc}:/etc/underlay:ro`,
    image, ...args,
  ]);
  await waitOr(() => fs.existsSync(d.pluginSocket()), { timeoutMs: 30_000, what: `the agent container's plugin socket on ${h.name}` }, logsOf(d, 'underlay-agent'));
}

describe('underlay in containers (the image)', () => {
  it('runs the controller as uid 10001 and the agents as root with NET_ADMIN and NET_RAW only, from the same image', async () => {
    const d1 = docker.get('h1')!;
    expect((await d1.dockerOk(['exec', 'underlay-controller', 'id', '-u'])).trim()).toBe('10001');
    const caps = (await d1.dockerOk(['inspect', '--format', '{{json .HostConfig.CapAdd}} {{.HostConfig.Privileged}}', 'underlay-agent'])).trim();
    expect(caps).toBe('["NET_ADMIN","NET_RAW"] false');
    for (const c of ['underlay-controller', 'underlay-agent']) expect((await d1.dockerOk(['inspect', '--format', '{{.Config.Image}}', c])).trim()).toBe(image);
  });

  it('passes the two-host scenario: one network on both hosts, distinct addresses, ping across', async () => {
    const d1 = docker.get('h1')!;
    const d2 = docker.get('h2')!;
    await d1.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.0/24', '--gateway', '192.0.2.1', '-o', 'parent=eth1', 'n1']);
    await waitFor(async () => (await d2.docker(['network', 'inspect', 'n1'])).code === 0, { timeoutMs: 15_000, intervalMs: 100, what: 'network n1 replicated on h2 by its agent container' });
    await d1.dockerOk(['run', '-d', '--name', 'ca', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    await d2.dockerOk(['run', '-d', '--name', 'cb', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ipA = await containerIp(d1, 'ca', 'n1');
    const ipB = await containerIp(d2, 'cb', 'n1');
    expect(ipA).toMatch(/^192\.0\.2\.\d+$/);
    expect(ipB).toMatch(/^192\.0\.2\.\d+$/);
    expect(ipA).not.toBe(ipB);
    await d1.dockerOk(['exec', 'ca', 'ping', '-c', '2', '-W', '3', ipB]);
    await d2.dockerOk(['exec', 'cb', 'ping', '-c', '2', '-W', '3', ipA]);
    // The controller (in its container) holds both allocations.
    const r = await fetch(`${controllerUrl}/v1/endpoints`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(5_000) });
    const { endpoints } = (await r.json()) as { endpoints: { node: string }[] };
    expect(endpoints.map((e) => e.node).sort()).toEqual(['h1', 'h2']);
  });

  it('reports the controller and the agents healthy through the image\'s HEALTHCHECK', async () => {
    for (const [h, d] of docker) {
      for (const c of h === 'h1' ? ['underlay-controller', 'underlay-agent'] : ['underlay-agent']) {
        await waitOr(async () => (await health(d, c)) === 'healthy', { timeoutMs: 60_000, intervalMs: 500, what: `${c} on ${h} to be healthy (HEALTHCHECK every 10 s)` }, () => d.dockerOk(['inspect', '--format', '{{json .State.Health}}', c]));
      }
    }
  });
});
