// cgroups of lab dockerds (v1 hierarchies and/or the v2 unified tree under
// /sys/fs/cgroup): find them by name prefix, list the processes in them, and
// remove them (killing what is inside first).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { killAll } from './kill';
import { waitFor } from './wait';

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
  const what = `processes in cgroups ${dirs.join(', ')}`;
  await killAll(pidsInCgroups(dirs), what, timeoutMs);
  let remaining: string[] = [];
  const removeAll = (): boolean => {
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
    return remaining.length === 0;
  };
  await waitFor(
    async () => {
      if (removeAll()) return true;
      // EBUSY while dying processes are still being removed from the cgroup.
      await killAll(pidsInCgroups(dirs), what, timeoutMs).catch(() => undefined);
      return false;
    },
    { timeoutMs, intervalMs: 100, what: `cgroups ${dirs.join(', ')} to be removed` },
  ).catch(() => undefined); // the caller gets what is left
  return remaining;
}
