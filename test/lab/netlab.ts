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
//
// Around it: prerequisites.ts (tools the lab needs), lab-state.ts (state files
// of live labs, the prefix rule, the machine-wide lock), netns.ts (links and
// namespaces by prefix, ip(8)) and sweep.ts (leftovers and their removal).
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { labStepReport, recordLabStep } from './budget';
import { ProcInfo, readProcStat } from './procfs';
import { CommandError, RunOptions, RunResult, run, runOk, which } from './run';
import { Proc, spawnLogged, stopProcess } from './spawn';
import { assertPrerequisites } from './prerequisites';
import { ip, ipBin, linksWithPrefix, netnsInode, netnsWithPrefix, processesInNetns } from './netns';
import { LAB_STATE_DIR, PREFIX_RE, acquireLabLock, removeState, writeState } from './lab-state';
import { sweepLab, sweepStaleLabs } from './sweep';

export const LAB_NET = '198.51.100';
export const LAB_PREFIX_LEN = 24;
/** Address of the bridge in the root namespace; services bound here are reachable from every host. */
export const BRIDGE_ADDRESS = `${LAB_NET}.254`;
/** Name of the lab-facing interface inside every host namespace. */
export const HOST_PARENT_IF = 'eth1';
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
