// One dockerd per simulated host.
//
// dockerd runs in the host's network namespace and in a private mount
// namespace of its own:
//
//   nsenter --net=/run/netns/<ns> unshare -m --propagation private sh -c SCRIPT ...
//
// Inside that mount namespace SCRIPT puts a tmpfs on /run (so /run/docker,
// /run/docker/plugins and /run/containerd are per-dockerd), bind-mounts
// `<dir>/plugins` onto /run/docker/plugins (so a plugin started outside can drop
// `<dir>/plugins/underlay.sock` where exactly this dockerd looks), hides /opt
// behind a tmpfs (containerd's "opt" plugin would otherwise create
// /opt/containerd) and bind-mounts `<dir>/etc-docker` onto /etc/docker (dockerd
// 20.10 writes key.json there and has no flag to move it). None of these mounts
// is visible in the root mount namespace; they vanish with the last process
// in the namespace.
//
// With /run/containerd/containerd.sock hidden, dockerd starts its own managed
// containerd below --exec-root/--data-root, so several dockerds never share a
// containerd. Containers go into the cgroup `/<prefix>-<host>/<id>`, which is
// how stop() finds every container process even after the shims were
// re-parented away from dockerd.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Lab, LabHost } from './netlab';
import { assertPrerequisites } from './prerequisites';
import { labBudgetMs, labOverrun, recordLabStep } from './budget';
import { ProcInfo, listProcesses, isLabProcessFor, mountsUnder, readNamespaceInode } from './procfs';
import { killAll, recordPid } from './kill';
import { CommandError, RunOptions, RunResult, requireExecutable, run, runOk, which } from './run';
import { Proc, spawnLogged, stopProcess } from './spawn';
import { waitFor } from './wait';
import { httpGet } from './probes';
import { pidsInCgroups, removeCgroups } from './cgroups';

/** Image imported by importBusybox(): static busybox plus one symlink per applet in /bin. */
export const BUSYBOX_IMAGE = 'underlay-busybox:latest';

/** Plugin name the product's agent is expected to use: its socket is `<pluginDir>/underlay.sock`. */
export const DEFAULT_PLUGIN_NAME = 'underlay';

// Fixed script text: every path is a positional argument, nothing is interpolated.
//   $1 = per-dockerd directory, $2... = dockerd arguments
const DOCKERD_SCRIPT = `set -eu
dir="$1"; shift
# Copies of every /run/netns/* mount came along into this mount namespace; drop
# them so this dockerd never pins other labs' namespaces.
umount -l /run/netns 2>/dev/null || true
# Private /run: own /run/docker (plugins dir, netns, ...) and no
# /run/containerd/containerd.sock, so dockerd starts its own containerd.
mount -t tmpfs -o mode=0755 underlay-run /run
mkdir -p /run/docker/plugins /run/containerd
mount --bind "$dir/plugins" /run/docker/plugins
# containerd's opt plugin creates /opt/containerd; keep that out of the real /opt.
mount -t tmpfs -o mode=0755 underlay-opt /opt
# dockerd 20.10 writes /etc/docker/key.json and reads plugin specs there.
[ -d /etc/docker ] || mkdir -p /etc/docker
mount --bind "$dir/etc-docker" /etc/docker
exec dockerd "$@"
`;

export interface DockerdOptions {
  /** Directory for this dockerd (default `<lab.dir>/docker/<host>`). Keep it short (unix socket paths ≤ 107 bytes). */
  dir?: string;
  /** Start with --debug (also UNDERLAY_LAB_DOCKERD_DEBUG=1). */
  debug?: boolean;
  /** Extra dockerd arguments, appended last. */
  extraArgs?: string[];
  /** Extra content for daemon.json (default {}). */
  daemonConfig?: Record<string, unknown>;
  /** How long to wait for /_ping. Default: the budget of 'dockerd start' (test/lab/budget.ts). */
  timeoutMs?: number;
  /**
   * The storage driver (default vfs: plain directories, no mounts at all, works on any file system). vfs copies
   * the whole image for every layer and every container, which is nothing for the busybox image but minutes for
   * underlay's own image (~200 MB, a build of 28 steps): the suites that build or run that image use overlay2
   * (Docker's default; needs overlayfs and a lab directory on a file system it can use as upper layer, e.g. ext4).
   * Its mounts live in dockerd's private mount namespace like everything else.
   */
  storageDriver?: 'vfs' | 'overlay2';
}

export interface Dockerd {
  readonly lab: Lab;
  readonly host: LabHost;
  /** Per-dockerd directory. */
  readonly dir: string;
  /** API socket path (in the root mount namespace; usable from anywhere). */
  readonly sock: string;
  /** `unix://<sock>` */
  readonly dockerHost: string;
  /** Directory this dockerd sees as /run/docker/plugins; put `<name>.sock` here. */
  readonly pluginDir: string;
  /** `--cgroup-parent` of the containers, `/<prefix>-<host>`. */
  readonly cgroupParent: string;
  readonly pid: number;
  readonly proc: Proc;
  readonly logFile: string;
  /** Environment for the docker CLI (DOCKER_HOST, DOCKER_CONFIG, DOCKER_API_VERSION). */
  readonly env: NodeJS.ProcessEnv;
  /** Inode of dockerd's private mount namespace. */
  readonly mountNsInode: number;
  /** `<pluginDir>/<name>.sock` */
  pluginSocket(name?: string): string;
  /** Runs the docker CLI against this dockerd. Never throws for a non-zero exit. */
  docker(args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** docker() that returns stdout, or throws with stderr and the dockerd log tail. */
  dockerOk(args: readonly string[], opts?: RunOptions): Promise<string>;
  /**
   * A path usable from the root mount namespace for a path inside dockerd's
   * private one, e.g. a container's SandboxKey: `nsenter --net=${d.sandboxPath(key)}`.
   */
  sandboxPath(pathInside: string): string;
  /** dockerd, its containerd, shims and container processes currently alive. */
  relatedProcesses(): ProcInfo[];
  /** Stops containers, dockerd, containerd and shims; removes the cgroups. Idempotent. */
  stop(): Promise<void>;
  /**
   * A power cut: dockerd, containerd, shims, plugins and containers SIGKILLed together (dockerd sees no container
   * exit, as after a reboot), then stop()'s clean-up; the exec root is emptied as a reboot empties /run.
   */
  crash(): Promise<void>;
}

let cachedCli: { bin: string; needsApiPin: boolean } | undefined;

/** The docker CLI to use: Debian's /usr/bin/docker (matches the 20.10 daemon) if present, else `docker` on PATH. */
export function dockerCli(): { bin: string; needsApiPin: boolean } {
  if (cachedCli) return cachedCli;
  if (fs.existsSync('/usr/bin/docker')) cachedCli = { bin: '/usr/bin/docker', needsApiPin: false };
  else cachedCli = { bin: requireExecutable('docker', 'install docker.io'), needsApiPin: true };
  return cachedCli;
}

function cliEnv(dockerHost: string, configDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('DOCKER_')) env[k] = v;
  }
  env.DOCKER_HOST = dockerHost;
  env.DOCKER_CONFIG = configDir;
  // A newer client (e.g. 28.x) must be pinned to what dockerd 20.10 speaks.
  env.DOCKER_API_VERSION = process.env.DOCKER_API_VERSION ?? '1.41';
  return env;
}

function daemonPathEnv(): NodeJS.ProcessEnv {
  const dirs = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  const have = (process.env.PATH ?? '').split(':').filter(Boolean);
  return { ...process.env, PATH: [...have, ...dirs.filter((d) => !have.includes(d))].join(':') };
}

/** Starts dockerd inside `host`'s network namespace; resolves when /_ping answers OK. Registered for lab.destroy(). */
export async function startDockerd(lab: Lab, host: LabHost | string, opts: DockerdOptions = {}): Promise<Dockerd> {
  assertPrerequisites(['lab', 'docker']);
  const h = typeof host === 'string' ? lab.host(host) : host;
  const dir = opts.dir ?? path.join(lab.dir, 'docker', h.name);
  const sock = path.join(dir, 'docker.sock');
  if (Buffer.byteLength(path.join(dir, 'exec', 'containerd', 'containerd.sock.ttrpc')) > 107) {
    throw new Error(`dockerd dir ${dir} is too long for unix socket paths; use a shorter lab baseDir`);
  }
  const pluginDir = path.join(dir, 'plugins');
  for (const sub of ['plugins', 'etc-docker', 'data', 'exec', 'cli']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
  fs.writeFileSync(path.join(dir, 'daemon.json'), JSON.stringify(opts.daemonConfig ?? {}, null, 2));
  const cgroupParent = `/${lab.prefix}-${h.name}`;
  const logFile = path.join(dir, 'dockerd.log');
  const debug = opts.debug ?? process.env.UNDERLAY_LAB_DOCKERD_DEBUG === '1';

  const dockerdArgs = [
    '--config-file', path.join(dir, 'daemon.json'),
    '--data-root', path.join(dir, 'data'),
    '--exec-root', path.join(dir, 'exec'),
    '--pidfile', path.join(dir, 'docker.pid'),
    '-H', `unix://${sock}`,
    '--bridge=none',
    '--iptables=false',
    '--ip6tables=false',
    '--ip-masq=false',
    '--userland-proxy=false',
    `--storage-driver=${opts.storageDriver ?? 'vfs'}`,
    '--exec-opt', 'native.cgroupdriver=cgroupfs',
    `--cgroup-parent=${cgroupParent}`,
    '--shutdown-timeout=5',
    ...(debug ? ['--debug'] : []),
    ...(opts.extraArgs ?? []),
  ];
  const nsenter = requireExecutable('nsenter');
  const unshare = requireExecutable('unshare');
  const proc = spawnLogged(
    nsenter,
    [`--net=${h.netnsPath}`, '--', unshare, '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', DOCKERD_SCRIPT, 'underlay-dockerd', dir, ...dockerdArgs],
    { name: `dockerd@${h.name}`, logFile, env: daemonPathEnv() },
  );
  const ownMnt = readNamespaceInode('self', 'mnt');
  let mountNsInode = 0;
  let stopping: Promise<void> | undefined;

  const relatedProcesses = (): ProcInfo[] => {
    const cg = cgroupDirsNamed(cgroupParent.slice(1));
    const inCg = new Set(pidsInCgroups(cg));
    return listProcesses().filter((p) => {
      if (p.pid === process.pid || p.state === 'Z') return false;
      if (p.pid === proc.pid) return p.startTime === proc.ref.startTime;
      if (inCg.has(p.pid)) return true;
      if (mountNsInode && mountNsInode !== ownMnt && readNamespaceInode(p.pid, 'mnt') === mountNsInode) return true;
      return isLabProcessFor(p, dir);
    });
  };

  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      const problems: string[] = [];
      // 1. Container processes first (dockerd would give each 10 s on shutdown).
      const cg = cgroupDirsNamed(cgroupParent.slice(1));
      await killAll(pidsInCgroups(cg), `containers of dockerd@${h.name}`).catch((e: Error) => problems.push(e.message));
      // 2. dockerd itself; it stops its managed containerd.
      await stopProcess(proc, 'SIGTERM', 20_000).catch((e: Error) => problems.push(e.message));
      // 3. Whatever outlived it: containerd, shims (re-parented to init), stray container processes.
      for (let round = 0; round < 3; round++) {
        const left = relatedProcesses();
        if (left.length === 0) break;
        await killAll(
          left.map((p) => p.pid),
          `leftovers of dockerd@${h.name}`,
        ).catch((e: Error) => problems.push(e.message));
      }
      // 4. cgroups.
      const cgLeft = await removeCgroups(cgroupDirsNamed(cgroupParent.slice(1))).catch((e: Error) => [e.message]);
      if (cgLeft.length) problems.push(`cgroups left: ${cgLeft.join(', ')}`);
      // 5. Mounts in our namespace below dir should not exist (they live in dockerd's private namespace).
      for (const mp of mountsUnder(dir)) {
        await runOk(which('umount') ?? 'umount', ['-l', mp], { timeoutMs: 15_000 }).catch((e: Error) => problems.push(e.message));
      }
      const still = relatedProcesses();
      if (still.length) problems.push(`still alive: ${still.map((p) => `${p.pid}(${p.comm})`).join(', ')}`);
      if (problems.length) {
        throw new Error(`stopping dockerd@${h.name} had problems:\n  - ${problems.join('\n  - ')}\n${proc.describe(20)}`);
      }
    })());
  lab.onDestroy(`dockerd@${h.name}`, stop, { beforeProcesses: true });
  const crash = async (): Promise<void> => {
    await killAll(
      relatedProcesses().map((p) => p.pid),
      `dockerd@${h.name} and everything it runs (power cut)`,
    );
    await stop();
    // A reboot empties /run, where the exec root lives: its pid files would name processes that are gone (or, once
    // the pid is reused, another process: the next dockerd then waits for a containerd that is not there).
    fs.rmSync(path.join(dir, 'exec'), { recursive: true, force: true });
    fs.rmSync(path.join(dir, 'docker.pid'), { force: true });
  };

  try {
    const started = Date.now();
    await waitFor(
      async () => {
        const r = await httpGet({ socketPath: sock, path: '/_ping' }, 2_000);
        return r.status === 200 && r.body.trim() === 'OK';
      },
      {
        timeoutMs: opts.timeoutMs ?? labBudgetMs('dockerd start'),
        what: `dockerd@${h.name} to answer /_ping on ${sock}${opts.timeoutMs === undefined ? ` (${labOverrun('dockerd start', `on ${h.name}`)})` : ''}`,
        proc,
        intervalMs: 100,
      },
    );
    recordLabStep('dockerd start', Date.now() - started);
    const mnt = readNamespaceInode(proc.pid, 'mnt');
    if (mnt === undefined || mnt === ownMnt) {
      throw new Error(`dockerd@${h.name} is not in a private mount namespace (mnt ${mnt}, ours ${ownMnt})\n${proc.describe()}`);
    }
    mountNsInode = mnt;
    for (const p of relatedProcesses()) recordPid(p.pid, `${p.comm}@${h.name}`);
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }

  const { bin } = dockerCli();
  const env = cliEnv(`unix://${sock}`, path.join(dir, 'cli'));
  const d: Dockerd = {
    lab,
    host: h,
    dir,
    sock,
    dockerHost: `unix://${sock}`,
    pluginDir,
    cgroupParent,
    pid: proc.pid,
    proc,
    logFile,
    env,
    mountNsInode,
    pluginSocket: (name = DEFAULT_PLUGIN_NAME) => path.join(pluginDir, `${name}.sock`),
    async docker(args, o = {}) {
      const started = Date.now();
      const r = await run(bin, args, { timeoutMs: labBudgetMs('docker cli'), ...o, env: { ...env, ...(o.env ?? {}) } });
      recordLabStep('docker cli', Date.now() - started);
      if (r.timedOut && o.timeoutMs === undefined) r.stderr += `\n${labOverrun('docker cli', `(docker ${args[0] ?? ''} on ${h.name})`)}`;
      return r;
    },
    async dockerOk(args, o = {}) {
      const r = await d.docker(args, o);
      if (r.code !== 0) {
        const err = new CommandError(r);
        err.message += `\n  dockerd@${h.name} log (${logFile}), last lines:\n${proc
          .logTail(15)
          .split('\n')
          .map((l) => `    ${l}`)
          .join('\n')}`;
        throw err;
      }
      return r.stdout;
    },
    sandboxPath: (p) => `/proc/${proc.pid}/root${p.startsWith('/') ? '' : '/'}${p}`,
    relatedProcesses,
    stop,
    crash,
  };
  return d;
}

/** Top-level cgroup directories named exactly `name` in every hierarchy. */
function cgroupDirsNamed(name: string): string[] {
  const out: string[] = [];
  const root = '/sys/fs/cgroup';
  const candidates = [path.join(root, name)];
  try {
    for (const e of fs.readdirSync(root, { withFileTypes: true })) {
      if (e.isDirectory()) candidates.push(path.join(root, e.name, name));
    }
  } catch {
    /* no cgroup fs */
  }
  for (const c of candidates) {
    if (fs.existsSync(path.join(c, 'cgroup.procs'))) out.push(c);
  }
  return out;
}

// ---------------------------------------------------------------------------
// busybox image

const tarCache = new Map<string, Promise<string>>();

/**
 * Builds (once per lab directory) a rootfs tar with /bin/busybox and a symlink
 * /bin/<applet> for every applet of `busybox --list`. Returns the tar path.
 */
export function buildBusyboxTar(labDir: string): Promise<string> {
  let p = tarCache.get(labDir);
  if (!p) {
    p = (async () => {
      const busybox = requireExecutable('busybox', 'install busybox-static');
      const rootfs = path.join(labDir, 'busybox-rootfs');
      const tar = path.join(labDir, 'busybox.tar');
      fs.rmSync(rootfs, { recursive: true, force: true });
      for (const d of ['bin', 'etc', 'root', 'var', 'tmp']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
      fs.chmodSync(path.join(rootfs, 'tmp'), 0o1777);
      fs.copyFileSync(busybox, path.join(rootfs, 'bin', 'busybox'));
      fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
      const applets = (await runOk(busybox, ['--list'])).split('\n').map((s) => s.trim());
      for (const a of applets) {
        if (!a || a === 'busybox' || !/^[\w.[-]+$/.test(a)) continue;
        fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
      }
      await runOk(busybox, ['tar', '-C', rootfs, '-cf', tar, '.']);
      fs.rmSync(rootfs, { recursive: true, force: true });
      return tar;
    })();
    tarCache.set(labDir, p);
    p.catch(() => tarCache.delete(labDir));
  }
  return p;
}

/** Imports the busybox rootfs as BUSYBOX_IMAGE into `d` (no-op if already there). Returns the image name. */
export async function importBusybox(d: Dockerd): Promise<string> {
  if ((await d.docker(['image', 'inspect', '--format', '{{.Id}}', BUSYBOX_IMAGE])).code === 0) return BUSYBOX_IMAGE;
  const tar = await buildBusyboxTar(d.lab.dir);
  await d.dockerOk(['import', '--change', 'CMD ["sh"]', tar, BUSYBOX_IMAGE]);
  return BUSYBOX_IMAGE;
}
