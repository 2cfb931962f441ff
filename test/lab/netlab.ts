// A network lab of simulated hosts: one Linux bridge in the root namespace and,
// per host, a network namespace attached to it by a veth pair whose inner end
// is called eth1 (so `-o parent=eth1` works the same on every host).
//
//   root ns:  <prefix>br 198.51.100.254/24
//               ├── <prefix>v1  ⇄  netns <prefix>-<name1>: eth1 198.51.100.1/24
//               └── <prefix>v2  ⇄  netns <prefix>-<name2>: eth1 198.51.100.2/24
//
// Everything created carries the lab's unique prefix (`ul` + 4 hex chars), so
// cleanup only ever touches names with that prefix. The machine's eth0 and
// routes are never touched.
import * as child_process from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { labStepReport, recordLabStep } from './budget';
import { ProcInfo, isAlive, listProcesses, isLabProcessFor, mountsUnder, readNamespaceInode, readProcStat } from './procfs';
import { killAll, recordPid } from './kill';
import { CommandError, RunOptions, RunResult, run, runOk, which } from './run';
import { Proc, spawnLogged, stopProcess } from './spawn';
import { settlesWithin } from './wait';
import { cgroupDirsWithPrefix, pidsInCgroups, removeCgroups } from './cgroups';

export const LAB_NET = '198.51.100';
export const LAB_PREFIX_LEN = 24;
/** Address of the bridge in the root namespace; services bound here are reachable from every host. */
export const BRIDGE_ADDRESS = `${LAB_NET}.254`;
/** Name of the lab-facing interface inside every host namespace. */
export const HOST_PARENT_IF = 'eth1';
/** Where bookkeeping for live labs is kept, so a later run can sweep labs whose owner died. */
export const LAB_STATE_DIR = '/run/underlay-lab';

// Always 'ul' + 2..6 chars: cleanup deletes every link/netns starting with the prefix,
// so a prefix must never be able to match a real interface such as eth0.
const PREFIX_RE = /^ul[a-z0-9]{2,6}$/;
const HOST_NAME_RE = /^[a-z0-9][a-z0-9_]{0,15}$/;

export interface LabHost {
  /** Name given to addHost. */
  name: string;
  /** 1-based index; also the last octet of the address. */
  index: number;
  /** Network namespace name, `<prefix>-<name>`. */
  netns: string;
  /** `/run/netns/<netns>`; use with `nsenter --net=<netnsPath>`. */
  netnsPath: string;
  /** Inode of the namespace (to find processes inside it). */
  netnsInode: number;
  /** e.g. 198.51.100.1 */
  address: string;
  /** e.g. 198.51.100.1/24 */
  cidr: string;
  /** The host's lab-facing interface inside its namespace: always 'eth1'. */
  parent: string;
  /** Root-namespace end of the veth pair (enslaved to the bridge). */
  vethRoot: string;
}

export interface SpawnInOptions {
  name?: string;
  /** Default `<lab.dir>/logs/<host>-<name>.log`. */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface Lab {
  /** Unique prefix of every name this lab creates, e.g. 'ul3f9a'. */
  readonly prefix: string;
  /** Bridge name in the root namespace, `<prefix>br`. */
  readonly bridge: string;
  /** 198.51.100.254 */
  readonly bridgeAddress: string;
  /** Temp directory holding everything on disk (logs, dockerd data, service data). */
  readonly dir: string;
  readonly hosts: readonly LabHost[];
  /** Host by name; throws if unknown. */
  host(name: string): LabHost;
  /** Creates a host namespace wired to the bridge; address 198.51.100.<n>. */
  addHost(name: string): Promise<LabHost>;
  /** Runs a command inside the host's network namespace (nsenter --net, no shell). */
  exec(host: LabHost | string, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** exec() that throws (with stderr) on non-zero exit; returns stdout. */
  execOk(host: LabHost | string, cmd: string, args: readonly string[], opts?: RunOptions): Promise<string>;
  /** Starts a long-running process inside the host's network namespace (e.g. an agent); stopped by destroy(). */
  spawnIn(host: LabHost | string, cmd: string, args: readonly string[], opts?: SpawnInOptions): Proc;
  /** Starts a long-running process in the root namespace (e.g. a controller); log in `<dir>/logs/<name>.log`; stopped by destroy(). */
  spawn(cmd: string, args: readonly string[], opts?: SpawnInOptions): Proc;
  /**
   * Registers a cleanup step for destroy(). Order of destroy(): steps registered
   * with `beforeProcesses` (dockerds: they may still call plugins while
   * shutting down), last-registered first; then processes from spawn/spawnIn,
   * newest first; then the other steps (etcd, nats ...), last-registered first;
   * then the sweep of namespaces, links, cgroups, mounts and the directory.
   */
  onDestroy(name: string, fn: () => Promise<void> | void, opts?: { beforeProcesses?: boolean }): void;
  /** Processes currently running inside any of the lab's host namespaces. */
  processesInHosts(): ProcInfo[];
  isDestroyed(): boolean;
  /**
   * Tears everything down: cleanup steps, spawned processes, any process left in
   * a host namespace, cgroups `<prefix>-*`, namespaces, links, mounts below dir,
   * and dir itself. Idempotent; throws an aggregated error if anything remains.
   */
  destroy(): Promise<void>;
}

export interface LabOptions {
  /** Name prefix (default 'ul' + 4 random hex chars). Must match /^ul[a-z0-9]{2,6}$/. */
  prefix?: string;
  /** Parent of the lab directory (default os.tmpdir()). Keep it short: unix socket paths are limited to 107 bytes. */
  baseDir?: string;
  /** Keep the lab directory (logs) after destroy(). Also enabled by UNDERLAY_LAB_KEEP=1. */
  keepDir?: boolean;
  /** Sweep leftovers of labs whose owning process died (default true). */
  sweepStale?: boolean;
  /**
   * All labs share 198.51.100.0/24 and the bridge address .254, so only one lab
   * may exist on a machine at a time: createLab waits this long for the
   * machine-wide lab lock held by another process (default 240 s, or
   * UNDERLAY_LAB_LOCK_TIMEOUT_MS).
   */
  lockTimeoutMs?: number;
}

// ---------------------------------------------------------------------------
// Prerequisites

export type Feature = 'lab' | 'docker' | 'etcd' | 'nats';

const TOOLS: Record<Feature, string[]> = {
  lab: ['ip', 'nsenter', 'unshare', 'mount', 'umount', 'flock', 'busybox'],
  docker: ['dockerd', 'containerd', 'containerd-shim-runc-v2', 'runc', 'docker'],
  etcd: ['etcd'],
  nats: ['nats-server'],
};

/** Lists what is missing for the given features (empty when all is there). */
export function checkPrerequisites(features: readonly Feature[] = ['lab', 'docker', 'etcd', 'nats']): string[] {
  const problems: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    problems.push(`must run as root (uid 0), running as uid ${process.getuid()}`);
  }
  if (process.platform !== 'linux') problems.push(`needs Linux, running on ${process.platform}`);
  for (const f of features) {
    for (const tool of TOOLS[f]) {
      if (!which(tool)) problems.push(`missing executable '${tool}' (needed for ${f})`);
    }
  }
  if (features.includes('lab') && !fs.existsSync('/proc/self/ns/net')) problems.push('no network namespace support (/proc/self/ns/net)');
  if (features.includes('docker') && !fs.existsSync('/sys/fs/cgroup')) problems.push('no cgroup filesystem at /sys/fs/cgroup');
  return problems;
}

/** Throws one clear error listing everything missing. The e2e suite must fail, not skip, without its tools. */
export function assertPrerequisites(features?: readonly Feature[]): void {
  const problems = checkPrerequisites(features);
  if (problems.length > 0) {
    throw new Error(
      `underlay e2e lab prerequisites not met:\n  - ${problems.join('\n  - ')}\n` +
        'The e2e suite needs root plus iproute2, util-linux, busybox-static, docker.io (dockerd 20.10, containerd, runc), etcd-server and nats-server.',
    );
  }
}

// ---------------------------------------------------------------------------
// Helpers

function ipBin(): string {
  return which('ip') ?? 'ip';
}

async function ip(args: readonly string[]): Promise<string> {
  return runOk(ipBin(), args, { timeoutMs: 15_000 });
}

/** Names of links in the root namespace that start with `prefix`. */
export async function linksWithPrefix(prefix: string): Promise<string[]> {
  const out = await ip(['-o', 'link', 'show']);
  const names: string[] = [];
  for (const line of out.split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m && m[1] !== undefined && m[1].startsWith(prefix)) names.push(m[1]);
  }
  return names;
}

/** Links of one lab in the root namespace: exactly `<prefix>br` and `<prefix>v<n>` (so lab 'ul12' never matches lab 'ul1234'). */
export async function labLinks(prefix: string): Promise<string[]> {
  const re = new RegExp(`^${prefix}(br|v\\d+)$`);
  return (await linksWithPrefix(prefix)).filter((n) => re.test(n));
}

/** Network namespaces (in /run/netns) whose name starts with `<prefix>-`. */
export function netnsWithPrefix(prefix: string): string[] {
  try {
    return fs.readdirSync('/run/netns').filter((n) => n.startsWith(`${prefix}-`));
  } catch {
    return [];
  }
}

function netnsInode(nsPath: string): number | undefined {
  try {
    return fs.statSync(nsPath).ino;
  } catch {
    return undefined;
  }
}

/** Processes whose network namespace is one of the given inodes. */
export function processesInNetns(inodes: ReadonlySet<number>): ProcInfo[] {
  if (inodes.size === 0) return [];
  return listProcesses().filter((p) => {
    const ino = readNamespaceInode(p.pid, 'net');
    return ino !== undefined && inodes.has(ino);
  });
}

export interface Leftovers {
  netns: string[];
  links: string[];
  mounts: string[];
  cgroups: string[];
  processes: ProcInfo[];
  dirExists: boolean;
}

/** What of a lab (by prefix and dir) still exists on the machine. */
export async function findLeftovers(prefix: string, dir?: string): Promise<Leftovers> {
  const netns = netnsWithPrefix(prefix);
  const inodes = new Set<number>();
  for (const n of netns) {
    const ino = netnsInode(`/run/netns/${n}`);
    if (ino !== undefined) inodes.add(ino);
  }
  const procs = processesInNetns(inodes);
  if (dir) {
    const seen = new Set(procs.map((p) => p.pid));
    for (const p of listProcesses()) {
      if (!seen.has(p.pid) && isLabProcessFor(p, dir)) procs.push(p);
    }
  }
  return {
    netns,
    links: await labLinks(prefix),
    mounts: dir ? mountsUnder(dir) : [],
    cgroups: cgroupDirsWithPrefix(`${prefix}-`),
    processes: procs.filter((p) => p.state !== 'Z'),
    dirExists: dir ? fs.existsSync(dir) : false,
  };
}

export function describeLeftovers(l: Leftovers): string[] {
  const out: string[] = [];
  if (l.netns.length) out.push(`netns: ${l.netns.join(', ')}`);
  if (l.links.length) out.push(`links: ${l.links.join(', ')}`);
  if (l.mounts.length) out.push(`mounts: ${l.mounts.join(', ')}`);
  if (l.cgroups.length) out.push(`cgroups: ${l.cgroups.join(', ')}`);
  if (l.processes.length) out.push(`processes: ${l.processes.map((p) => `${p.pid}(${p.comm})`).join(', ')}`);
  return out;
}

/**
 * Removes every trace of a lab by prefix (and dir): kills processes in its
 * namespaces / cgroups / referring to dir, removes cgroups `<prefix>-*`,
 * deletes namespaces and links named with the prefix, unmounts below dir and
 * deletes dir (unless keepDir). Returns what could not be removed.
 */
export async function sweepLab(prefix: string, dir?: string, keepDir = false): Promise<string[]> {
  if (!PREFIX_RE.test(prefix)) throw new Error(`refusing to sweep lab with suspicious prefix '${prefix}'`);
  const errors: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      await fn();
    } catch (e) {
      errors.push(`${what}: ${(e as Error).message}`);
    }
  };

  // 1. Processes: anything inside the namespaces, in the cgroups, or mentioning dir.
  for (let round = 0; round < 3; round++) {
    const l = await findLeftovers(prefix, dir);
    const pids = new Set<number>(l.processes.map((p) => p.pid));
    for (const cg of l.cgroups) {
      for (const pid of pidsInCgroups([cg])) pids.add(pid);
    }
    if (pids.size === 0) break;
    await attempt(`killing lab processes`, () => killAll(pids, `lab ${prefix} processes`));
  }

  // 2. cgroups left by lab dockerds (--cgroup-parent=/<prefix>-<host>).
  await attempt('removing cgroups', async () => {
    const left = await removeCgroups(cgroupDirsWithPrefix(`${prefix}-`));
    if (left.length) throw new Error(`could not remove ${left.join(', ')}`);
  });

  // 3. Namespaces (this also destroys the veth ends inside them).
  for (const ns of netnsWithPrefix(prefix)) {
    await attempt(`deleting netns ${ns}`, () => ip(['netns', 'del', ns]));
  }

  // 4. Links in the root namespace: veth root ends first, bridge last.
  const links = await labLinks(prefix).catch((e: Error) => {
    errors.push(`listing links: ${e.message}`);
    return [] as string[];
  });
  links.sort((a, b) => Number(a.endsWith('br')) - Number(b.endsWith('br')));
  for (const link of links) {
    if (!link.startsWith(prefix) || link === 'eth0' || link === 'lo') continue;
    await attempt(`deleting link ${link}`, async () => {
      const r = await run(ipBin(), ['link', 'del', link], { timeoutMs: 15_000 });
      // Deleting one veth end removes its peer too; "Cannot find device" is fine.
      if (r.code !== 0 && !/Cannot find device|does not exist/i.test(r.stderr)) throw new CommandError(r);
    });
  }

  // 5. Mounts below dir (a lab normally leaves none in the root mount namespace).
  if (dir) {
    for (const mp of mountsUnder(dir)) {
      await attempt(`unmounting ${mp}`, () => runOk(which('umount') ?? 'umount', ['-l', mp], { timeoutMs: 15_000 }));
    }
    if (!keepDir) {
      if (mountsUnder(dir).length === 0) {
        await attempt(`removing ${dir}`, async () => fs.rmSync(dir, { recursive: true, force: true }));
      } else {
        errors.push(`not removing ${dir}: mounts remain below it`);
      }
    }
  }

  const left = describeLeftovers(await findLeftovers(prefix, dir));
  if (left.length) errors.push(`still present after sweep: ${left.join('; ')}`);
  return errors;
}

interface LabState {
  prefix: string;
  dir: string;
  ownerPid: number;
  ownerStart: string;
  createdAt: string;
}

function writeState(state: LabState): void {
  fs.mkdirSync(LAB_STATE_DIR, { recursive: true });
  fs.writeFileSync(path.join(LAB_STATE_DIR, `${state.prefix}.json`), JSON.stringify(state, null, 2));
}

function removeState(prefix: string): void {
  fs.rmSync(path.join(LAB_STATE_DIR, `${prefix}.json`), { force: true });
}

/**
 * Cleans up labs whose owning process is gone (e.g. jest was SIGKILLed).
 * Labs of live processes are never touched. Returns the prefixes swept.
 */
export async function sweepStaleLabs(): Promise<string[]> {
  let files: string[] = [];
  try {
    files = fs.readdirSync(LAB_STATE_DIR).filter((f) => f.endsWith('.json'));
  } catch {
    return [];
  }
  const swept: string[] = [];
  for (const f of files) {
    let st: LabState;
    try {
      st = JSON.parse(fs.readFileSync(path.join(LAB_STATE_DIR, f), 'utf8')) as LabState;
    } catch {
      continue;
    }
    if (!PREFIX_RE.test(st.prefix)) continue;
    if (isAlive({ pid: st.ownerPid, startTime: st.ownerStart, name: 'lab owner' })) continue;
    const errors = await sweepLab(st.prefix, st.dir);
    if (errors.length === 0) removeState(st.prefix);
    swept.push(st.prefix);
  }
  return swept;
}

// ---------------------------------------------------------------------------
// Machine-wide lab lock
//
// Every lab uses 198.51.100.254/24 on its bridge in the root namespace; two
// labs at once would give the root namespace two routes for the same subnet.
// The lock is an flock(1) held by a tiny child process whose stdin is a pipe
// from us: when we release (or die, even by SIGKILL), the pipe closes, the
// child exits and the kernel drops the lock. No stale lock files.

const LAB_LOCK_FILE = path.join(LAB_STATE_DIR, 'lab.lock');
let lockHeld = false;

function describeLiveLabs(): string {
  try {
    const states = fs
      .readdirSync(LAB_STATE_DIR)
      .filter((f) => f.endsWith('.json'))
      .map((f) => fs.readFileSync(path.join(LAB_STATE_DIR, f), 'utf8'));
    return states.length ? states.join('\n') : '(no lab state files)';
  } catch {
    return '(no lab state files)';
  }
}

/** Takes the machine-wide lab lock; resolves to a release function. */
export async function acquireLabLock(timeoutMs: number): Promise<() => Promise<void>> {
  if (lockHeld) {
    throw new Error('this process already owns a lab; only one lab can exist at a time (they all use 198.51.100.254/24) — destroy the first one');
  }
  fs.mkdirSync(LAB_STATE_DIR, { recursive: true });
  const flock = which('flock');
  if (!flock) throw new Error("missing executable 'flock' (util-linux), needed for the lab lock");
  const secs = Math.max(1, Math.ceil(timeoutMs / 1000));
  const child = child_process.spawn(
    flock,
    ['--exclusive', '--timeout', String(secs), '--conflict-exit-code', '75', LAB_LOCK_FILE, '/bin/sh', '-c', 'echo locked; exec cat >/dev/null'],
    { stdio: ['pipe', 'pipe', 'pipe'], shell: false },
  );
  if (child.pid !== undefined) recordPid(child.pid, 'lab-lock');
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(null));
  });
  child.stdin?.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('locked')) resolve();
    });
    void exited.then((code) => {
      if (code === 75) {
        reject(new Error(`timed out after ${secs} s waiting for the lab lock ${LAB_LOCK_FILE}; another lab is running:\n${describeLiveLabs()}`));
      } else {
        reject(new Error(`lab lock helper exited with code ${code}: ${stderr.trim()}`));
      }
    });
  });
  lockHeld = true;
  // Do not keep the event loop (jest) alive just because a lab was not destroyed.
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  let released: Promise<void> | undefined;
  return () =>
    (released ??= (async () => {
      child.stdin?.end();
      const done = await settlesWithin(exited, 5_000);
      if (!done) child.kill('SIGKILL');
      lockHeld = false;
    })());
}

function randomPrefix(): string {
  return `ul${crypto.randomBytes(2).toString('hex')}`;
}

// ---------------------------------------------------------------------------
// createLab

/** Creates the bridge (up, 198.51.100.254/24) in the root namespace and returns the lab. */
export async function createLab(opts: LabOptions = {}): Promise<Lab> {
  assertPrerequisites(['lab']);
  const lockTimeoutMs = opts.lockTimeoutMs ?? Number(process.env.UNDERLAY_LAB_LOCK_TIMEOUT_MS ?? 240_000);
  const releaseLock = await acquireLabLock(lockTimeoutMs);
  try {
    return await createLabLocked(opts, releaseLock);
  } catch (e) {
    await releaseLock();
    throw e;
  }
}

async function createLabLocked(opts: LabOptions, releaseLock: () => Promise<void>): Promise<Lab> {
  if (opts.sweepStale ?? true) await sweepStaleLabs();

  let prefix = opts.prefix;
  if (prefix !== undefined) {
    if (!PREFIX_RE.test(prefix)) throw new Error(`lab prefix '${prefix}' must match ${PREFIX_RE}`);
  } else {
    for (let i = 0; i < 20 && prefix === undefined; i++) {
      const p = randomPrefix();
      if (netnsWithPrefix(p).length === 0 && (await linksWithPrefix(p)).length === 0 && !fs.existsSync(path.join(LAB_STATE_DIR, `${p}.json`))) {
        prefix = p;
      }
    }
    if (prefix === undefined) throw new Error('could not find an unused lab prefix');
  }
  const bridge = `${prefix}br`;
  if ((await linksWithPrefix(bridge)).includes(bridge)) throw new Error(`lab bridge ${bridge} already exists`);

  const baseDir = opts.baseDir ?? os.tmpdir();
  const dir = fs.mkdtempSync(path.join(baseDir, `${prefix}-`));
  const keepDir = opts.keepDir ?? process.env.UNDERLAY_LAB_KEEP === '1';
  const self = readProcStat(process.pid);
  writeState({ prefix, dir, ownerPid: process.pid, ownerStart: self?.startTime ?? '', createdAt: new Date().toISOString() });

  const hosts: LabHost[] = [];
  const procs: Proc[] = [];
  type Cleanup = { name: string; fn: () => Promise<void> | void };
  const early: Cleanup[] = [];
  const cleanups: Cleanup[] = [];
  let destroyed = false;
  let teardownStarted = false;
  let destroying: Promise<void> | undefined;
  const nsenter = which('nsenter') ?? 'nsenter';
  const labPrefix = prefix;

  const resolveHost = (h: LabHost | string): LabHost => {
    if (typeof h !== 'string') return h;
    const found = hosts.find((x) => x.name === h);
    if (!found) throw new Error(`lab ${labPrefix}: unknown host '${h}' (have: ${hosts.map((x) => x.name).join(', ') || 'none'})`);
    return found;
  };
  const checkLive = (): void => {
    if (teardownStarted) throw new Error(`lab ${labPrefix} has been destroyed`);
  };

  const lab: Lab = {
    prefix,
    bridge,
    bridgeAddress: BRIDGE_ADDRESS,
    dir,
    hosts,
    host: (name) => resolveHost(name),

    async addHost(name: string): Promise<LabHost> {
      checkLive();
      if (!HOST_NAME_RE.test(name)) throw new Error(`host name '${name}' must match ${HOST_NAME_RE}`);
      if (hosts.some((h) => h.name === name)) throw new Error(`lab ${labPrefix}: host '${name}' exists already`);
      const index = hosts.length + 1;
      if (index > 253) throw new Error('a lab holds at most 253 hosts');
      const netns = `${labPrefix}-${name}`;
      const vethRoot = `${labPrefix}v${index}`;
      if (vethRoot.length > 15) throw new Error(`interface name ${vethRoot} too long`);
      const address = `${LAB_NET}.${index}`;
      await ip(['netns', 'add', netns]);
      const netnsPath = `/run/netns/${netns}`;
      // Peer is created directly inside the namespace with its final name.
      await ip(['link', 'add', vethRoot, 'type', 'veth', 'peer', 'name', HOST_PARENT_IF, 'netns', netns]);
      await ip(['link', 'set', vethRoot, 'master', bridge]);
      await ip(['link', 'set', vethRoot, 'up']);
      const inNs = (args: string[]): Promise<string> => runOk(nsenter, [`--net=${netnsPath}`, '--', ipBin(), ...args], { timeoutMs: 15_000 });
      await inNs(['link', 'set', 'lo', 'up']);
      await inNs(['addr', 'add', `${address}/${LAB_PREFIX_LEN}`, 'dev', HOST_PARENT_IF]);
      await inNs(['link', 'set', HOST_PARENT_IF, 'up']);
      const ino = netnsInode(netnsPath);
      if (ino === undefined) throw new Error(`netns ${netnsPath} vanished right after creation`);
      const host: LabHost = {
        name,
        index,
        netns,
        netnsPath,
        netnsInode: ino,
        address,
        cidr: `${address}/${LAB_PREFIX_LEN}`,
        parent: HOST_PARENT_IF,
        vethRoot,
      };
      hosts.push(host);
      return host;
    },

    exec(h, cmd, args, opts2) {
      const host = resolveHost(h);
      return run(nsenter, [`--net=${host.netnsPath}`, '--', cmd, ...args], opts2);
    },

    async execOk(h, cmd, args, opts2) {
      const r = await lab.exec(h, cmd, args, opts2);
      if (r.code !== 0) throw new CommandError(r);
      return r.stdout;
    },

    spawnIn(h, cmd, args, o = {}) {
      checkLive();
      const host = resolveHost(h);
      const name = o.name ?? path.basename(cmd);
      const p = spawnLogged(nsenter, [`--net=${host.netnsPath}`, '--', cmd, ...args], {
        name: `${host.name}/${name}`,
        logFile: o.logFile ?? path.join(dir, 'logs', `${host.name}-${name}.log`),
        env: o.env,
        cwd: o.cwd,
      });
      procs.push(p);
      return p;
    },

    spawn(cmd, args, o = {}) {
      checkLive();
      const name = o.name ?? path.basename(cmd);
      const p = spawnLogged(cmd, args, {
        name,
        logFile: o.logFile ?? path.join(dir, 'logs', `${name}.log`),
        env: o.env,
        cwd: o.cwd,
      });
      procs.push(p);
      return p;
    },

    onDestroy(name, fn, o = {}) {
      (o.beforeProcesses ? early : cleanups).push({ name, fn });
    },

    processesInHosts() {
      return processesInNetns(new Set(hosts.map((h) => h.netnsInode))).filter((p) => p.state !== 'Z');
    },

    isDestroyed: () => destroyed,

    destroy(): Promise<void> {
      if (destroyed) return Promise.resolve();
      teardownStarted = true;
      destroying ??= (async () => {
        const started = Date.now();
        const errors: string[] = [];
        // Cleanup steps and spawned processes run once; the sweep runs again on a retry.
        const runSteps = async (list: Cleanup[]): Promise<void> => {
          while (list.length > 0) {
            const c = list.pop() as Cleanup;
            try {
              await c.fn();
            } catch (e) {
              errors.push(`cleanup '${c.name}': ${(e as Error).message}`);
            }
          }
        };
        await runSteps(early);
        while (procs.length > 0) {
          const p = procs.pop() as Proc;
          try {
            await stopProcess(p, 'SIGTERM', 5_000);
          } catch (e) {
            errors.push(`stopping ${p.name}: ${(e as Error).message}`);
          }
        }
        await runSteps(cleanups);
        errors.push(...(await sweepLab(labPrefix, dir, keepDir)));
        if (errors.length > 0) {
          destroying = undefined; // allow a retry
          await releaseLock();
          throw new Error(`lab ${labPrefix} teardown had problems (dir ${dir}):\n  - ${errors.join('\n  - ')}`);
        }
        destroyed = true;
        removeState(labPrefix);
        await releaseLock();
        recordLabStep('lab teardown', Date.now() - started);
        const report = labStepReport();
        if (report) console.log(report);
      })();
      return destroying;
    },
  };

  try {
    await ip(['link', 'add', bridge, 'type', 'bridge']);
    // The root namespace answers ARP on the bridge only for the bridge's own address: by default Linux answers for
    // any of its addresses on any interface, and this machine's own (e.g. eth0's, which may lie in a subnet the
    // tests give containers) would draw the hosts' container traffic into the root namespace and out of it.
    fs.writeFileSync(`/proc/sys/net/ipv4/conf/${bridge}/arp_ignore`, '1');
    await ip(['addr', 'add', `${BRIDGE_ADDRESS}/${LAB_PREFIX_LEN}`, 'dev', bridge]);
    await ip(['link', 'set', bridge, 'up']);
  } catch (e) {
    await lab.destroy().catch(() => undefined);
    throw e;
  }
  return lab;
}
