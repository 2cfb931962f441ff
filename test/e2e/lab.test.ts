// Smoke test of the e2e lab itself: two simulated hosts on a bridge, etcd and
// NATS on the bridge address, one dockerd per host running busybox containers,
// and a teardown that leaves nothing behind. Needs root; fails (never skips)
// when a required tool is missing.
import * as fs from 'node:fs';
import * as http from 'node:http';
import {
  BRIDGE_ADDRESS,
  BUSYBOX_IMAGE,
  Dockerd,
  EtcdService,
  NatsService,
  ProcRef,
  cgroupDirsWithPrefix,
  checkPrerequisites,
  importBusybox,
  isAlive,
  linksWithPrefix,
  netnsWithPrefix,
  readNamespaceInode,
  recordPid,
  recordedProcesses,
  requireExecutable,
  run,
  startDockerd,
  startLabEtcd,
  startLabNats,
  waitFor,
  withLab,
} from '../lab';

const timings: Record<string, number> = {};
const t0 = Date.now();

async function timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const start = Date.now();
  try {
    return await fn();
  } finally {
    timings[name] = Date.now() - start;
  }
}

describe('e2e lab', () => {
  const ctx = withLab({ hosts: ['h1', 'h2'] });
  let etcd: EtcdService;
  let nats: NatsService;
  const dockerds: Dockerd[] = [];

  afterAll(() => {
    timings.total = Date.now() - t0;
    // One line, so the numbers are easy to find in CI logs.
    console.info(`lab timings (ms): ${JSON.stringify(timings)}`);
  });

  test('prerequisites: root, iproute2, util-linux, busybox, dockerd, etcd, nats-server', () => {
    expect(checkPrerequisites()).toEqual([]);
  });

  test('hosts have eth1 on the bridge and reach each other', async () => {
    const busybox = requireExecutable('busybox');
    const { lab } = ctx;
    const h1 = ctx.host('h1');
    const h2 = ctx.host('h2');
    expect(h1).toMatchObject({ address: '198.51.100.1', parent: 'eth1', netnsPath: `/run/netns/${lab.prefix}-h1` });
    expect(h2).toMatchObject({ address: '198.51.100.2', parent: 'eth1', netnsPath: `/run/netns/${lab.prefix}-h2` });
    expect(lab.bridge).toBe(`${lab.prefix}br`);
    expect(lab.bridge.length).toBeLessThanOrEqual(15);

    const addr = await lab.execOk(h1, 'ip', ['-o', '-4', 'addr', 'show', 'dev', 'eth1']);
    expect(addr).toContain('198.51.100.1/24');
    // The host namespace has only lo and eth1: the machine's eth0 is not there.
    const links = await lab.execOk(h2, 'ip', ['-o', 'link', 'show']);
    expect(links).not.toMatch(/\beth0\b/);

    const ping = (from: string, to: string) =>
      waitFor(async () => (await lab.exec(from, busybox, ['ping', '-c', '1', '-W', '1', to], { timeoutMs: 5_000 })).code === 0, {
        timeoutMs: 15_000,
        what: `ping ${from} -> ${to}`,
        intervalMs: 200,
      });
    await timed('ping', async () => {
      await ping('h1', h2.address);
      await ping('h2', h1.address);
      await ping('h1', BRIDGE_ADDRESS);
    });
  }, 30_000);

  test('etcd and nats bound to the bridge are reachable from inside the hosts', async () => {
    const busybox = requireExecutable('busybox');
    const { lab } = ctx;
    [etcd, nats] = await timed('etcd+nats start', () => Promise.all([startLabEtcd(lab), startLabNats(lab)]));
    expect(etcd.url).toBe(`http://${BRIDGE_ADDRESS}:${etcd.port}`);
    expect(nats.url).toBe(`nats://${BRIDGE_ADDRESS}:${nats.port}`);

    // (No `wget -T`: busybox 1.35's wget segfaults with it; run()'s timeout bounds the call instead.)
    const health = await lab.execOk('h1', busybox, ['wget', '-q', '-O', '-', `${etcd.url}/health`], { timeoutMs: 10_000 });
    expect(JSON.parse(health)).toMatchObject({ health: 'true' });

    const healthz = await lab.execOk('h2', busybox, ['wget', '-q', '-O', '-', `${nats.monitorUrl}/healthz`], { timeoutMs: 10_000 });
    expect(healthz).toContain('ok');

    // The NATS client port itself (what an agent connects to): the server greets with INFO and answers PING.
    const r = await lab.exec('h2', busybox, ['timeout', '3', 'nc', BRIDGE_ADDRESS, String(nats.port)], {
      input: 'CONNECT {"verbose":false}\r\nPING\r\n',
      timeoutMs: 10_000,
    });
    expect(r.stdout).toMatch(/^INFO /);
    expect(r.stdout).toContain('PONG');
  }, 60_000);

  test('one dockerd per host runs busybox containers', async () => {
    const { lab } = ctx;
    const started = await timed('dockerd start (2 in parallel)', () =>
      Promise.all([startDockerd(lab, 'h1'), startDockerd(lab, 'h2')]),
    );
    dockerds.push(...started);

    for (const d of dockerds) {
      // dockerd lives in its host's network namespace, in a private mount namespace.
      expect(readNamespaceInode(d.pid, 'net')).toBe(d.host.netnsInode);
      expect(d.mountNsInode).not.toBe(readNamespaceInode('self', 'mnt'));
      // Its /run/docker/plugins is the per-host pluginDir.
      fs.writeFileSync(`${d.pluginDir}/marker`, d.host.name);
      expect(fs.readFileSync(d.sandboxPath('/run/docker/plugins/marker'), 'utf8')).toBe(d.host.name);
      fs.rmSync(`${d.pluginDir}/marker`);
      expect(d.pluginSocket()).toBe(`${d.pluginDir}/underlay.sock`);

      await timed(`import busybox@${d.host.name}`, () => importBusybox(d));
      const out = await timed(`docker run@${d.host.name}`, () =>
        d.dockerOk(['run', '--rm', '--network', 'none', BUSYBOX_IMAGE, 'sh', '-c', 'echo hi']),
      );
      expect(out.trim()).toBe('hi');
    }
    // Separate daemons: an image imported into one is not in the other's store.
    const ids = await Promise.all(dockerds.map((d) => d.dockerOk(['info', '--format', '{{.ID}} {{.DockerRootDir}}'])));
    expect(new Set(ids).size).toBe(2);

    // A long-running container whose shim and process must be gone after teardown.
    const d1 = dockerds[0] as Dockerd;
    await d1.dockerOk(['run', '-d', '--name', 'sleeper', '--network', 'none', BUSYBOX_IMAGE, 'sleep', '3600']);
    const [pidText = '', sandboxKey = ''] = (
      await d1.dockerOk(['inspect', '--format', '{{.State.Pid}} {{.NetworkSettings.SandboxKey}}', 'sleeper'])
    )
      .trim()
      .split(' ');
    const pid = Number(pidText);
    expect(pid).toBeGreaterThan(1);
    expect(isAlive(pid)).toBe(true);
    recordPid(pid, 'sleeper');
    // The sandbox (container netns) can be entered from outside through sandboxPath().
    const inSandbox = await run(requireExecutable('nsenter'), [`--net=${d1.sandboxPath(sandboxKey)}`, '--', 'ip', '-o', 'link', 'show'], {
      timeoutMs: 10_000,
    });
    expect(inSandbox.code).toBe(0);
    expect(inSandbox.stdout).toMatch(/\blo\b/);
    expect(inSandbox.stdout).not.toMatch(/\beth1\b/);
  }, 120_000);

  test('a plugin socket put in pluginDir from outside is found by that dockerd only', async () => {
    const [d1, d2] = dockerds as [Dockerd, Dockerd];
    const calls: string[] = [];
    // Minimal remote network driver (Docker plugin protocol v1) served from the root namespace.
    const server = http.createServer((req, res) => {
      calls.push(req.url ?? '');
      req.resume();
      req.on('end', () => {
        const body: Record<string, unknown> =
          req.url === '/Plugin.Activate'
            ? { Implements: ['NetworkDriver'] }
            : req.url === '/NetworkDriver.GetCapabilities'
              ? { Scope: 'local', ConnectivityScope: 'local' }
              : {};
        res.setHeader('Content-Type', 'application/vnd.docker.plugins.v1.2+json');
        res.end(JSON.stringify(body));
      });
    });
    const sock = d1.pluginSocket('labprobe');
    await new Promise<void>((resolve, reject) => server.listen(sock, resolve).once('error', reject));
    try {
      await d1.dockerOk(['network', 'create', '-d', 'labprobe', 'probe']);
      expect(calls).toEqual(expect.arrayContaining(['/Plugin.Activate', '/NetworkDriver.CreateNetwork']));
      await d1.dockerOk(['network', 'rm', 'probe']);
      expect(calls).toContain('/NetworkDriver.DeleteNetwork');
      // h2's dockerd has its own plugins dir and does not see it. (Asking h2's dockerd for the
      // driver would take ~15 s of plugin-lookup retries before "not found".)
      expect(fs.existsSync(d1.sandboxPath('/run/docker/plugins/labprobe.sock'))).toBe(true);
      expect(fs.existsSync(d2.sandboxPath('/run/docker/plugins/labprobe.sock'))).toBe(false);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      fs.rmSync(sock, { force: true });
    }
  }, 60_000);

  test("docker's built-in macvlan on eth1 connects containers across hosts", async () => {
    // Sanity check that the lab carries macvlan traffic between hosts (container range 192.0.2.0/24).
    const [d1, d2] = dockerds as [Dockerd, Dockerd];
    for (const d of dockerds) {
      await d.dockerOk(['network', 'create', '-d', 'macvlan', '-o', 'parent=eth1', '--subnet', '192.0.2.0/24', 'mv']);
    }
    await d2.dockerOk(['run', '-d', '--name', 'target', '--network', 'mv', '--ip', '192.0.2.12', BUSYBOX_IMAGE, 'sleep', '3600']);
    const out = await timed('macvlan ping across hosts', () =>
      d1.dockerOk(['run', '--rm', '--network', 'mv', '--ip', '192.0.2.11', BUSYBOX_IMAGE, 'ping', '-c', '1', '-W', '5', '192.0.2.12']),
    );
    expect(out).toContain('1 packets received');
  }, 60_000);

  test('destroy leaves no namespace, link, process, mount, cgroup or directory behind', async () => {
    const { lab } = ctx;
    const { prefix, dir } = lab;
    // Also a plain process spawned inside a host namespace.
    const sleeper = lab.spawnIn('h2', requireExecutable('busybox'), ['sleep', '3600'], { name: 'sleeper' });
    // (nsenter joins the namespace right after exec, so poll until it is in there.)
    await waitFor(() => lab.processesInHosts().some((p) => p.pid === sleeper.pid), {
      timeoutMs: 5_000,
      what: `spawned sleeper (pid ${sleeper.pid}) to be inside h2's namespace`,
      proc: sleeper,
    });

    // Everything alive that belongs to the lab right now: dockerd, containerd, shims, containers, services.
    for (const d of dockerds) for (const p of d.relatedProcesses()) recordPid(p.pid, `${p.comm}@${d.host.name}`);
    const tracked: ProcRef[] = recordedProcesses();
    expect(tracked.filter((r) => isAlive(r)).length).toBeGreaterThanOrEqual(6);
    expect(tracked.map((r) => r.pid)).toEqual(expect.arrayContaining([etcd.pid, nats.pid, ...dockerds.map((d) => d.pid)]));

    await timed('destroy', () => lab.destroy());
    await lab.destroy(); // idempotent

    expect(netnsWithPrefix(prefix)).toEqual([]);
    expect(await linksWithPrefix(prefix)).toEqual([]);
    expect(tracked.filter((r) => isAlive(r)).map((r) => `${r.pid}(${r.name})`)).toEqual([]);
    const mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
    expect(mountinfo.split('\n').filter((l) => l.includes(dir))).toEqual([]);
    expect(cgroupDirsWithPrefix(`${prefix}-`)).toEqual([]);
    expect(fs.existsSync(dir)).toBe(false);
    // The machine's own interface is untouched.
    const eth0 = await run('ip', ['-o', 'link', 'show', 'dev', 'eth0']);
    if (eth0.code === 0) expect(eth0.stdout).toMatch(/state UP|LOWER_UP/);
  }, 120_000);
});
