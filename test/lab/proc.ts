// Process helpers for the end-to-end lab: spawn with logs, run without a shell,
// bounded waits, PID bookkeeping and careful killing.
//
// Every process this module starts (or is told about with recordPid) is kept in
// a per-module registry together with its start time, so a test can later prove
// that none of them is still alive without being fooled by PID reuse.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';

// ---------------------------------------------------------------------------
// /proc helpers

export interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  /** One-letter state from /proc/<pid>/stat (R, S, D, Z, ...). */
  state: string;
  /** Start time in clock ticks since boot (field 22); identifies a process together with its PID. */
  startTime: string;
  comm: string;
}

/** A process identity that survives PID reuse: PID plus start time. */
export interface ProcRef {
  pid: number;
  startTime?: string;
  name: string;
}

/** Parses /proc/<pid>/stat; undefined when the process does not exist. */
export function readProcStat(pid: number): ProcInfo | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < 0) return undefined;
  const rest = text.slice(close + 2).split(' ');
  return {
    pid,
    comm: text.slice(open + 1, close),
    state: rest[0] ?? '?',
    ppid: Number(rest[1]),
    pgid: Number(rest[2]),
    startTime: rest[19] ?? '',
  };
}

/** All processes currently visible in /proc. */
export function listProcesses(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const info = readProcStat(Number(entry));
    if (info) out.push(info);
  }
  return out;
}

/** The NUL-separated command line of a process, joined with spaces ('' if gone or a kernel thread). */
export function readCmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** True when a command line mentions `dir` itself or a path below it (not just a sibling sharing the prefix). */
export function mentionsPath(cmdline: string, dir: string): boolean {
  let i = cmdline.indexOf(dir);
  while (i >= 0) {
    const next = cmdline[i + dir.length];
    if (next === undefined || next === '/' || next === ' ') return true;
    i = cmdline.indexOf(dir, i + 1);
  }
  return false;
}

/**
 * Daemons the lab starts itself (comm is cut at 15 chars). A process that merely
 * mentions a lab path (a shell, `tail -f` of a log ...) is only treated as
 * part of the lab if it is one of these or an orphan (parent is init).
 */
export const LAB_DAEMON_COMMS: ReadonlySet<string> = new Set([
  'dockerd',
  'containerd',
  'containerd-shim',
  'runc',
  'runc:[1:CHILD]',
  'runc:[2:INIT]',
  'etcd',
  'nats-server',
  'nsenter',
  'unshare',
]);

/** A process that mentions `dir` on its command line and is a lab daemon or an orphan. */
export function isLabProcessFor(p: ProcInfo, dir: string): boolean {
  if (p.state === 'Z' || p.pid === process.pid) return false;
  if (!LAB_DAEMON_COMMS.has(p.comm) && p.ppid !== 1) return false;
  return mentionsPath(readCmdline(p.pid), dir);
}

/** Inode of one of a process's namespaces (e.g. 'net', 'mnt'), or undefined. */
export function readNamespaceInode(pid: number | 'self', kind: string): number | undefined {
  try {
    const link = fs.readlinkSync(`/proc/${pid}/ns/${kind}`); // e.g. "net:[4026531840]"
    const m = /\[(\d+)\]/.exec(link);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** All descendants of `pid` (not including it), from a single /proc snapshot. */
export function descendantsOf(pid: number, procs: ProcInfo[] = listProcesses()): ProcInfo[] {
  const byParent = new Map<number, ProcInfo[]>();
  for (const p of procs) {
    const list = byParent.get(p.ppid) ?? [];
    list.push(p);
    byParent.set(p.ppid, list);
  }
  const out: ProcInfo[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const cur = queue.shift() as number;
    for (const child of byParent.get(cur) ?? []) {
      out.push(child);
      queue.push(child.pid);
    }
  }
  return out;
}

/**
 * True when the process exists and is not a zombie. With a ProcRef carrying a
 * start time, a different process that reused the PID counts as "not alive".
 */
export function isAlive(ref: number | ProcRef): boolean {
  const pid = typeof ref === 'number' ? ref : ref.pid;
  const info = readProcStat(pid);
  if (!info) return false;
  if (info.state === 'Z' || info.state === 'X' || info.state === 'x') return false;
  if (typeof ref !== 'number' && ref.startTime !== undefined && ref.startTime !== info.startTime) return false;
  return true;
}

/** PIDs we must never signal: init, ourselves and our ancestors (the jest runner, the shell ...). */
function protectedPids(): Set<number> {
  const out = new Set<number>([0, 1, process.pid]);
  let cur = process.ppid;
  for (let i = 0; i < 64 && cur > 1; i++) {
    out.add(cur);
    const info = readProcStat(cur);
    if (!info) break;
    cur = info.ppid;
  }
  return out;
}

/**
 * Sends a signal to one process, refusing PID 0/1, ourselves and our
 * ancestors. Returns false when the process did not exist.
 */
export function safeKill(pid: number, signal: NodeJS.Signals = 'SIGKILL'): boolean {
  if (!Number.isInteger(pid) || pid <= 1 || protectedPids().has(pid)) {
    throw new Error(`refusing to send ${signal} to protected PID ${pid}`);
  }
  try {
    process.kill(pid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/** Signals a whole process group (by its leader PID); false when the group is empty. */
export function killGroup(pgid: number, signal: NodeJS.Signals = 'SIGKILL'): boolean {
  if (!Number.isInteger(pgid) || pgid <= 1 || protectedPids().has(pgid)) {
    throw new Error(`refusing to send ${signal} to protected process group ${pgid}`);
  }
  if (readProcStat(process.pid)?.pgid === pgid) {
    throw new Error(`refusing to send ${signal} to our own process group ${pgid}`);
  }
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/**
 * SIGKILLs a set of processes (skipping protected ones) and waits, bounded,
 * until none of them is alive. Returns the refs that were still alive at the
 * start; throws if any survives the timeout.
 */
export async function killAll(pids: Iterable<number>, what: string, timeoutMs = 10_000): Promise<ProcRef[]> {
  const prot = protectedPids();
  const refs: ProcRef[] = [];
  for (const pid of new Set(pids)) {
    if (prot.has(pid)) continue;
    const info = readProcStat(pid);
    if (!info || info.state === 'Z') continue;
    refs.push({ pid, startTime: info.startTime, name: info.comm });
  }
  for (const r of refs) {
    recordPid(r.pid, r.name);
    try {
      process.kill(r.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  if (refs.length > 0) {
    await waitFor(() => refs.every((r) => !isAlive(r)), {
      timeoutMs,
      what: `${what}: processes ${refs.map((r) => `${r.pid}(${r.name})`).join(', ')} to die after SIGKILL`,
    });
  }
  return refs;
}

// ---------------------------------------------------------------------------
// PID registry

const registry = new Map<string, ProcRef>();

/** Remembers a process (PID + start time) so recordedProcesses() can report it later. */
export function recordPid(pid: number, name: string): ProcRef | undefined {
  const info = readProcStat(pid);
  if (!info) return undefined;
  const ref: ProcRef = { pid, startTime: info.startTime, name };
  registry.set(`${pid}:${info.startTime}`, ref);
  return ref;
}

/** Every process started through this module or recorded with recordPid. */
export function recordedProcesses(): ProcRef[] {
  return [...registry.values()];
}

// ---------------------------------------------------------------------------
// Executables

const EXTRA_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** Absolute path of an executable found on PATH (plus the sbin dirs), or undefined. */
export function which(cmd: string): string | undefined {
  if (cmd.includes('/')) return isExecutable(cmd) ? cmd : undefined;
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...EXTRA_PATH];
  for (const dir of dirs) {
    const full = path.join(dir, cmd);
    if (isExecutable(full)) return full;
  }
  return undefined;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Like which() but throws a clear error naming the missing tool. */
export function requireExecutable(cmd: string, hint = ''): string {
  const found = which(cmd);
  if (!found) throw new Error(`required executable '${cmd}' not found on PATH or in sbin dirs${hint ? ` (${hint})` : ''}`);
  return found;
}

// ---------------------------------------------------------------------------
// Log files

/** Last `lines` lines of a log file (reads at most the last 64 KiB). */
export function tailFile(file: string, lines = 40): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      const all = buf.toString('utf8').split('\n');
      if (all.length > 0 && all[all.length - 1] === '') all.pop();
      return all.slice(-lines).join('\n');
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    return `<could not read ${file}: ${(e as Error).message}>`;
  }
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}

// ---------------------------------------------------------------------------
// Long-running processes

export interface SpawnOptions {
  /** Short name used in error messages and the registry. */
  name?: string;
  /** stdout and stderr are appended to this file (its directory is created). */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Start the child in its own session/process group (default true) so stopProcess can signal the whole group. */
  detached?: boolean;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Proc {
  readonly name: string;
  readonly pid: number;
  readonly cmd: string;
  readonly args: readonly string[];
  readonly logFile: string;
  /** True when the child leads its own process group. */
  readonly detached: boolean;
  readonly ref: ProcRef;
  /** Resolves when the child has exited (never rejects). */
  readonly exited: Promise<ExitInfo>;
  /** Set once the child has exited. */
  exitInfo(): ExitInfo | undefined;
  isRunning(): boolean;
  /** Last lines of the log file. */
  logTail(lines?: number): string;
  /** A one-line description plus the log tail, for error messages. */
  describe(lines?: number): string;
}

/** Starts a long-running process with stdout+stderr going to a log file. No shell is involved. */
export function spawnLogged(cmd: string, args: readonly string[], opts: SpawnOptions): Proc {
  const name = opts.name ?? path.basename(cmd);
  fs.mkdirSync(path.dirname(opts.logFile), { recursive: true });
  const fd = fs.openSync(opts.logFile, 'a');
  const detached = opts.detached ?? true;
  let child: child_process.ChildProcess;
  try {
    fs.writeSync(fd, `# ${new Date().toISOString()} spawn: ${[cmd, ...args].map(quoteForLog).join(' ')}\n`);
    child = child_process.spawn(cmd, [...args], {
      stdio: ['ignore', fd, fd],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      detached,
      shell: false,
    });
  } finally {
    fs.closeSync(fd);
  }
  let exitInfo: ExitInfo | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
    child.once('error', (err) => {
      spawnError = err;
      exitInfo = { code: null, signal: null };
      resolve(exitInfo);
    });
  });
  const pid = child.pid;
  if (pid === undefined) {
    // spawn failed synchronously-ish (ENOENT etc.); 'error' will fire.
    throw new Error(`failed to spawn ${name} (${cmd}): executable missing or not runnable`);
  }
  const ref = recordPid(pid, name) ?? { pid, name };
  const proc: Proc = {
    name,
    pid,
    cmd,
    args: [...args],
    logFile: opts.logFile,
    detached,
    ref,
    exited,
    exitInfo: () => exitInfo,
    isRunning: () => exitInfo === undefined && isAlive(ref),
    logTail: (lines = 40) => tailFile(opts.logFile, lines),
    describe: (lines = 40) => {
      const state = exitInfo
        ? `exited (code ${exitInfo.code}, signal ${exitInfo.signal})${spawnError ? `, spawn error: ${spawnError.message}` : ''}`
        : 'running';
      return `${name} [pid ${pid}] ${state}; log ${opts.logFile}, last lines:\n${indent(tailFile(opts.logFile, lines))}`;
    },
  };
  return proc;
}

function quoteForLog(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Stops a process: `signal` to its process group (or just the PID when not
 * detached), waits up to graceMs, then SIGKILL, then reaps stragglers left in
 * the process group. Idempotent.
 */
export async function stopProcess(p: Proc, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
  const send = (sig: NodeJS.Signals): void => {
    if (p.detached) killGroup(p.pid, sig);
    if (isAlive(p.ref)) safeKill(p.pid, sig);
  };
  if (p.isRunning()) {
    send(signal);
    const done = await settlesWithin(p.exited, graceMs);
    if (!done && p.isRunning()) {
      send('SIGKILL');
      const killed = await settlesWithin(p.exited, 10_000);
      if (!killed && p.isRunning()) {
        throw new Error(`process ${p.name} [pid ${p.pid}] survived SIGKILL for 10 s\n${p.describe()}`);
      }
    }
  }
  if (p.detached) {
    // Anything the child left behind in its process group.
    const stragglers = listProcesses()
      .filter((i) => i.pgid === p.pid && i.state !== 'Z')
      .map((i) => i.pid);
    if (stragglers.length > 0) await killAll(stragglers, `process group of ${p.name}`);
  }
}

// ---------------------------------------------------------------------------
// Short commands

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to stdin, which is then closed. Without it stdin is /dev/null. */
  input?: string | Buffer;
  /** Kill the command (SIGKILL) after this long. Default 60 s. */
  timeoutMs?: number;
}

export interface RunResult {
  cmd: string;
  args: string[];
  /** Exit code; null when killed by a signal or on spawn failure. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a command to completion without a shell and captures its output. Never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve) => {
    const child = child_process.spawn(cmd, [...args], {
      stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      shell: false,
    });
    if (child.pid !== undefined) recordPid(child.pid, path.basename(cmd));
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    let settled = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const finish = (code: number | null, signal: NodeJS.Signals | null, extraErr = ''): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        cmd,
        args: [...args],
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + extraErr,
        timedOut,
      });
    };
    child.once('error', (e) => finish(null, null, `spawn error: ${e.message}`));
    child.once('close', (code, signal) => finish(code, signal));
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

export class CommandError extends Error {
  constructor(public readonly result: RunResult) {
    super(formatRunFailure(result));
    this.name = 'CommandError';
  }
}

export function formatRunFailure(r: RunResult): string {
  const how = r.timedOut ? 'timed out' : r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`;
  const tail = (s: string): string => s.trim().split('\n').slice(-20).join('\n');
  let msg = `command ${[r.cmd, ...r.args].map(quoteForLog).join(' ')} ${how}`;
  if (r.stderr.trim()) msg += `\n  stderr:\n${indent(tail(r.stderr))}`;
  if (r.stdout.trim()) msg += `\n  stdout:\n${indent(tail(r.stdout))}`;
  return msg;
}

/** run() that throws a CommandError (with stderr) unless the exit code is 0; returns stdout. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new CommandError(r);
  return r.stdout;
}

// ---------------------------------------------------------------------------
// Waiting

export interface WaitOptions {
  timeoutMs: number;
  /** Human description used in the timeout error: "Timed out after 5000 ms waiting for <what>". */
  what: string;
  intervalMs?: number;
  /** Fail fast (with its log tail) if this process exits while we wait. */
  proc?: Proc;
}

/**
 * Polls `predicate` until it returns a truthy value (which is returned) or the
 * timeout passes. Exceptions from the predicate count as "not yet"; the last
 * one is included in the timeout error.
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  opts: WaitOptions,
): Promise<NonNullable<T>> {
  const interval = opts.intervalMs ?? 100;
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await predicate();
      if (v) return v as NonNullable<T>;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (opts.proc && opts.proc.exitInfo() !== undefined) {
      throw new Error(`${opts.proc.name} exited while waiting for ${opts.what}\n${opts.proc.describe()}`);
    }
    if (Date.now() >= deadline) {
      let msg = `Timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`;
      if (lastError !== undefined) msg += `; last error: ${(lastError as Error)?.message ?? String(lastError)}`;
      if (opts.proc) msg += `\n${opts.proc.describe()}`;
      throw new Error(msg);
    }
    await sleep(Math.min(interval, Math.max(0, deadline - Date.now())));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** True if `p` settles within ms; the timer is cleared either way (no dangling handle keeping jest alive). */
export function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    p.then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      () => {
        clearTimeout(timer);
        resolve(true);
      },
    );
  });
}

// ---------------------------------------------------------------------------
// Network helpers

/** A TCP port that was free a moment ago on `host` (bind port 0, read it, close). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ port: 0, host, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error(`could not get a free port on ${host}`))));
    });
  });
}

export interface HttpResponse {
  status: number;
  body: string;
}

/** GET over TCP (url) or a unix socket ({socketPath, path}); rejects on network errors or timeout. */
export function httpGet(
  target: string | { socketPath: string; path: string },
  timeoutMs = 2_000,
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const req =
      typeof target === 'string'
        ? http.get(target, { timeout: timeoutMs, agent: false })
        : http.get({ socketPath: target.socketPath, path: target.path, timeout: timeoutMs, agent: false });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.once('error', reject);
    });
    req.once('timeout', () => req.destroy(new Error(`HTTP GET timed out after ${timeoutMs} ms`)));
    req.once('error', reject);
  });
}

/** Resolves true when a TCP connection to host:port succeeds within timeoutMs. */
export function tcpConnects(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------
// cgroups (v1 hierarchies and/or the v2 unified tree under /sys/fs/cgroup)

const CGROUP_ROOT = '/sys/fs/cgroup';

/** Hierarchy roots: /sys/fs/cgroup itself (pure v2) or its mounted sub-hierarchies (v1 / hybrid). */
function cgroupHierarchies(): string[] {
  const roots: string[] = [];
  try {
    if (fs.existsSync(path.join(CGROUP_ROOT, 'cgroup.procs'))) roots.push(CGROUP_ROOT);
    for (const e of fs.readdirSync(CGROUP_ROOT, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const full = path.join(CGROUP_ROOT, e.name);
      // Only hierarchy roots (mount points) — not child cgroups of a v2 root.
      if (roots[0] === CGROUP_ROOT) continue;
      if (fs.existsSync(path.join(full, 'cgroup.procs'))) roots.push(full);
    }
  } catch {
    /* no cgroup fs */
  }
  return roots;
}

/**
 * Top-level cgroup directories (in every hierarchy) whose name starts with
 * `namePrefix`, e.g. the `--cgroup-parent` of a lab dockerd.
 */
export function cgroupDirsWithPrefix(namePrefix: string): string[] {
  if (!namePrefix) throw new Error('cgroupDirsWithPrefix: empty prefix');
  const out: string[] = [];
  for (const root of cgroupHierarchies()) {
    try {
      for (const e of fs.readdirSync(root, { withFileTypes: true })) {
        if (e.isDirectory() && e.name.startsWith(namePrefix)) out.push(path.join(root, e.name));
      }
    } catch {
      /* ignore */
    }
  }
  return out;
}

/** A cgroup directory and all its descendants, deepest first. */
function cgroupTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: fs.Dirent[] = [];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
    out.push(d);
  };
  walk(dir);
  return out;
}

/** PIDs of every process in the given cgroup directories and their sub-cgroups. */
export function pidsInCgroups(dirs: readonly string[]): number[] {
  const pids = new Set<number>();
  for (const dir of dirs) {
    for (const d of cgroupTree(dir)) {
      try {
        for (const line of fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n')) {
          if (/^\d+$/.test(line.trim())) pids.add(Number(line.trim()));
        }
      } catch {
        /* gone */
      }
    }
  }
  return [...pids];
}

/**
 * Kills every process in the cgroups and removes the (then empty) cgroup
 * directories, deepest first. Bounded; returns what could not be removed.
 */
export async function removeCgroups(dirs: readonly string[], timeoutMs = 10_000): Promise<string[]> {
  if (dirs.length === 0) return [];
  await killAll(pidsInCgroups(dirs), `processes in cgroups ${dirs.join(', ')}`, timeoutMs);
  const deadline = Date.now() + timeoutMs;
  let remaining: string[] = [];
  for (;;) {
    remaining = [];
    for (const dir of dirs) {
      for (const d of cgroupTree(dir)) {
        try {
          fs.rmdirSync(d);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') remaining.push(d);
        }
      }
    }
    if (remaining.length === 0 || Date.now() >= deadline) return remaining;
    // EBUSY while dying processes are still being removed from the cgroup.
    await killAll(pidsInCgroups(dirs), `processes in cgroups ${dirs.join(', ')}`, timeoutMs).catch(() => undefined);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------
// Mounts

/** Mount points (from /proc/self/mountinfo) equal to or below `dir`, deepest/latest first. */
export function mountsUnder(dir: string, mountinfo = '/proc/self/mountinfo'): string[] {
  const base = path.resolve(dir);
  const out: string[] = [];
  let text = '';
  try {
    text = fs.readFileSync(mountinfo, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const mp = (fields[4] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mp === base || mp.startsWith(`${base}/`)) out.push(mp);
  }
  return out.reverse();
}
