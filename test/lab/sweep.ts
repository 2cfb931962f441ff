// Finding and removing what a lab left behind: `findLeftovers` lists the
// namespaces, links, mounts, cgroups and processes of a lab (by prefix and
// folder), `sweepLab` removes them, and `sweepStaleLabs` sweeps every lab whose
// owner process died (e.g. jest was SIGKILLed). Only names with a lab prefix are
// ever touched.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ProcInfo, isAlive, isLabProcessFor, listProcesses, mountsUnder } from './procfs';
import { killAll } from './kill';
import { CommandError, run, runOk, which } from './run';
import { cgroupDirsWithPrefix, pidsInCgroups, removeCgroups } from './cgroups';
import { ip, ipBin, labLinks, netnsInode, netnsWithPrefix, processesInNetns } from './netns';
import { LAB_STATE_DIR, LabState, PREFIX_RE, removeState } from './lab-state';

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
      // Deleting one veth end removes its peer too, and a namespace deleted above may take a link with it a moment
      // after the listing: "Cannot find device" and the kernel's "No such device" (ENODEV) mean it is gone.
      if (r.code !== 0 && !/Cannot find device|does not exist|No such device/i.test(r.stderr)) throw new CommandError(r);
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
