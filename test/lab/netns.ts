// Links and network namespaces in the root namespace, found by name prefix,
// and the processes living in a network namespace; `ip` runs ip(8).
import * as fs from 'node:fs';
import { ProcInfo, listProcesses, readNamespaceInode } from './procfs';
import { runOk, which } from './run';

/** The ip(8) binary (found in the sbin dirs too). */
export function ipBin(): string {
  return which('ip') ?? 'ip';
}

/** Runs ip(8) in the root namespace; throws a CommandError on failure. */
export async function ip(args: readonly string[]): Promise<string> {
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

/** Inode of a network namespace file (e.g. /run/netns/<name>), or undefined. */
export function netnsInode(nsPath: string): number | undefined {
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
