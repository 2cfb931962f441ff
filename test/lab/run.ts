// Short commands: finding an executable (`which`, `requireExecutable`) and
// running a command to completion without a shell (`run`, `runOk`), with its
// output captured and a readable `CommandError` when it fails. Long-running
// processes with a log file are in spawn.ts.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UnderlayError } from '@underlay/core';
import { recordPid } from './kill';

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
// Running a command

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

/** A command that did not exit 0; `result` has its exit code and output. */
export class CommandError extends UnderlayError {
  constructor(public readonly result: RunResult) {
    super('internal', formatRunFailure(result));
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
// Text for logs and error messages (shared with spawn.ts)

/** A word as a shell would need it quoted, for printing a command line. */
export function quoteForLog(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Every line indented by four spaces. */
export function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}
