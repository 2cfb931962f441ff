// Careful killing and the PID registry. Signals are never sent to init, to this
// process or to its ancestors (the jest runner, the shell); every process the lab
// starts or kills is recorded with its start time, so a test can later prove that
// none of them is still alive without being fooled by PID reuse.
import { isAlive, readProcStat, type ProcRef } from './procfs';
import { waitFor } from './wait';

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

/** Every process started through the lab (spawn.ts, run.ts) or recorded with recordPid. */
export function recordedProcesses(): ProcRef[] {
  return [...registry.values()];
}

// ---------------------------------------------------------------------------
// Signals

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
