// Reading /proc: process status (PID, parent, group, state, start time), command
// lines, namespace inodes, process trees, liveness that survives PID reuse, and
// the mount table. Read-only: nothing here signals or starts a process.
import * as fs from 'node:fs';
import * as path from 'node:path';

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
