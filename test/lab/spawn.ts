// Long-running processes (daemons): `spawnLogged` starts one without a shell,
// its stdout and stderr appended to a log file, and recorded in the PID registry;
// `stopProcess` stops it (signal, grace period, SIGKILL, stragglers in its process
// group). `tailFile` reads the end of a log for error messages.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { killAll, killGroup, recordPid, safeKill } from './kill';
import { isAlive, listProcesses, type ProcRef } from './procfs';
import { indent, quoteForLog } from './run';
import { settlesWithin } from './wait';

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
