// Which labs exist on this machine: one state file per live lab in
// LAB_STATE_DIR (its prefix, folder and owner process, so a later run can sweep
// a lab whose owner died), the rule every lab prefix follows, and the
// machine-wide lab lock.
//
// Every lab uses 198.51.100.254/24 on its bridge in the root namespace; two
// labs at once would give the root namespace two routes for the same subnet.
// The lock is an flock(1) held by a tiny child process whose stdin is a pipe
// from us: when we release (or die, even by SIGKILL), the pipe closes, the
// child exits and the kernel drops the lock. No stale lock files.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { recordPid } from './kill';
import { which } from './run';
import { settlesWithin } from './wait';

/** Where bookkeeping for live labs is kept, so a later run can sweep labs whose owner died. */
export const LAB_STATE_DIR = '/run/underlay-lab';

// Always 'ul' + 2..6 chars: cleanup deletes every link/netns starting with the prefix,
// so a prefix must never be able to match a real interface such as eth0.
export const PREFIX_RE = /^ul[a-z0-9]{2,6}$/;

export interface LabState {
  prefix: string;
  dir: string;
  ownerPid: number;
  ownerStart: string;
  createdAt: string;
}

export function writeState(state: LabState): void {
  fs.mkdirSync(LAB_STATE_DIR, { recursive: true });
  fs.writeFileSync(path.join(LAB_STATE_DIR, `${state.prefix}.json`), JSON.stringify(state, null, 2));
}

export function removeState(prefix: string): void {
  fs.rmSync(path.join(LAB_STATE_DIR, `${prefix}.json`), { force: true });
}

// ---------------------------------------------------------------------------
// Machine-wide lab lock

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
