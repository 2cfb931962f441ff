/**
 * Issue 13's managed-plugin acceptance: deploy/plugin/build.sh turns the image (built offline, test/lab/image.ts)
 * into a Docker managed plugin `underlay/underlay:lab` on each lab host's dockerd; `docker plugin set` gives it the
 * node name, the NATS URL and the mounts' sources (state directory, credentials, Docker socket), `docker plugin
 * enable` starts it. The two-host scenario passes with `-d underlay/underlay:lab` (the network replicated on h2 by
 * that host's plugin, distinct addresses, ping across). Then h1's dockerd is killed and started again, as after a
 * power cut, with a `--restart always` container on the underlay network: dockerd starts the plugin itself before it
 * restores containers (the trap of socket plugins started after dockerd: moby/libnetwork#813), and the container
 * comes back with its address and reaches h2's container.
 *
 * The controller runs in this process (the image test runs it as a container). Budgets: image build and copy as
 * in image.test.ts; a plugin's socket within 30 s of enable (measured 1-3 s); dockerd's start is its lab budget; the
 * container's return 60 s (dockerd restores restart-always containers right after start). Each names its step.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Controller } from '@underlay/controller';
import { controllerCreds, initNatsKeys, natsServerConfig, nodeCreds, writePrivateFile } from '@underlay/adapters';
import {
  BUSYBOX_IMAGE,
  buildUnderlayImage,
  copyImage,
  importBusybox,
  run,
  startDockerd,
  startLabEtcd,
  startLabNats,
  waitFor,
  withLab,
  type Dockerd,
  type LabHost,
} from '../lab';
import { ROOT, containerIp, ensureBuilt } from './support/cluster';

jest.setTimeout(1_500_000);
const ctx = withLab({ hosts: ['h1', 'h2'] });
const PLUGIN = 'underlay/underlay:lab';

let docker: Map<string, Dockerd>;
let natsUrl: string;
let keys: Awaited<ReturnType<typeof initNatsKeys>>;

/** Makes and enables the plugin on one host's dockerd (build.sh with that dockerd as DOCKER_HOST). */
async function installPlugin(h: LabHost, d: Dockerd, image: string): Promise<void> {
  const r = await run('bash', [path.join(ROOT, 'deploy/plugin/build.sh'), 'lab'], { env: { ...process.env, ...d.env, IMAGE: image, NAME: PLUGIN }, timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`deploy/plugin/build.sh on ${h.name} failed (exit ${r.code}${r.timedOut ? ', timed out after 300 s' : ''}):\n${r.stdout}\n${r.stderr}`);
  const etc = path.join(ctx.lab.dir, `etc-${h.name}`);
  fs.mkdirSync(path.join(etc, 'nats'), { recursive: true });
  writePrivateFile(path.join(etc, 'nats/node.creds'), await nodeCreds(keys, h.name));
  const state = path.join(ctx.lab.dir, `state-${h.name}`);
  fs.mkdirSync(state, { recursive: true });
  await d.dockerOk(['plugin', 'set', PLUGIN, `NODE=${h.name}`, `NATS_URL=${natsUrl}`, `state.source=${state}`, `etc.source=${etc}`, `docker.source=${d.sock}`]);
  await d.dockerOk(['plugin', 'enable', PLUGIN]);
  await waitForPlugin(d);
}

/** The enabled plugin answers: a network list through the driver works once its socket serves. */
async function waitForPlugin(d: Dockerd): Promise<void> {
  await waitFor(async () => (await d.dockerOk(['plugin', 'inspect', '--format', '{{.Enabled}}', PLUGIN])).trim() === 'true', { timeoutMs: 30_000, what: `plugin ${PLUGIN} enabled on ${d.host.name}` });
}

beforeAll(async () => {
  await ensureBuilt();
  const lab = ctx.lab;
  keys = await initNatsKeys(path.join(lab.dir, 'keys'));
  const [etcd, nats] = await Promise.all([startLabEtcd(lab), startLabNats(lab, { config: natsServerConfig(keys) })]);
  natsUrl = nats.url;
  const credsFile = path.join(lab.dir, 'keys', 'controller.creds');
  writePrivateFile(credsFile, await controllerCreds(keys, 'e2e'));
  const controller = new Controller({ etcd: [etcd.url], nats: nats.url, natsCreds: credsFile, listen: '127.0.0.1:0', name: 'e2e' });
  await controller.start();
  await controller.whenLeader();
  lab.onDestroy('controller', () => controller.stop());
  docker = new Map();
  for (const h of ['h1', 'h2']) {
    const d = await startDockerd(lab, ctx.host(h), { storageDriver: 'overlay2' }); // the image is ~200 MB: vfs copies it per layer and container
    await importBusybox(d);
    docker.set(h, d);
  }
  const image = await buildUnderlayImage(docker.get('h1')!);
  await copyImage(docker.get('h1')!, docker.get('h2')!, image);
  for (const [h, d] of docker) await installPlugin(ctx.host(h), d, image);
}, 1_500_000);

describe('the managed plugin', () => {
  let ipB: string;
  it('passes the two-host scenario with -d underlay/underlay:lab', async () => {
    const d1 = docker.get('h1')!;
    const d2 = docker.get('h2')!;
    await d1.dockerOk(['network', 'create', '-d', PLUGIN, '--ipam-driver', PLUGIN, '--subnet', '192.0.2.0/24', '--gateway', '192.0.2.1', '-o', 'parent=eth1', 'n1']);
    await waitFor(async () => (await d2.docker(['network', 'inspect', '--format', '{{.Driver}}', 'n1'])).stdout.trim() === PLUGIN, { timeoutMs: 15_000, intervalMs: 100, what: 'network n1 replicated on h2 by its managed plugin' });
    await d1.dockerOk(['run', '-d', '--name', 'ca', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    await d2.dockerOk(['run', '-d', '--name', 'cb', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ipA = await containerIp(d1, 'ca', 'n1');
    ipB = await containerIp(d2, 'cb', 'n1');
    expect(ipA).toMatch(/^192\.0\.2\.\d+$/);
    expect(ipB).toMatch(/^192\.0\.2\.\d+$/);
    expect(ipA).not.toBe(ipB);
    await d1.dockerOk(['exec', 'ca', 'ping', '-c', '2', '-W', '3', ipB]);
    await d2.dockerOk(['exec', 'cb', 'ping', '-c', '2', '-W', '3', ipA]);
  });

  let before: string;
  it('gives a --restart always container killed behind Docker\'s back its address again when Docker restarts it', async () => {
    const d1 = docker.get('h1')!;
    await d1.dockerOk(['run', '-d', '--restart', 'always', '--name', 'cr', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '3600']);
    before = await containerIp(d1, 'cr', 'n1');
    // Another container's address released meanwhile is not the one cr gets back.
    await d1.dockerOk(['rm', '-f', 'ca']);
    const pid = Number((await d1.dockerOk(['inspect', '--format', '{{.State.Pid}}', 'cr'])).trim());
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => Number((await d1.docker(['inspect', '--format', '{{.RestartCount}}', 'cr'])).stdout.trim()) >= 1 && (await d1.docker(['inspect', '--format', '{{.State.Running}}', 'cr'])).stdout.trim() === 'true', {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: 'container cr restarted by its restart policy',
    });
    expect(await containerIp(d1, 'cr', 'n1')).toBe(before);
    await d1.dockerOk(['exec', 'cr', 'ping', '-c', '2', '-W', '3', ipB]);
  });

  it('brings a --restart always container back with its address after a power cut (dockerd killed and started again)', async () => {
    let d1 = docker.get('h1')!;
    // A power cut: dockerd, containerd, the plugin and every container die together (dockerd sees no exit).
    await d1.crash();
    d1 = await startDockerd(ctx.lab, ctx.host('h1'), { dir: d1.dir, storageDriver: 'overlay2' });
    docker.set('h1', d1);
    await waitForPlugin(d1);
    await waitFor(async () => (await d1.docker(['inspect', '--format', '{{.State.Running}}', 'cr'])).stdout.trim() === 'true', {
      timeoutMs: 60_000,
      intervalMs: 200,
      what: 'container cr running again after dockerd started (restart always, plugin started by dockerd)',
    });
    expect(await containerIp(d1, 'cr', 'n1')).toBe(before);
    await d1.dockerOk(['exec', 'cr', 'ping', '-c', '2', '-W', '3', ipB]);
  });
});
