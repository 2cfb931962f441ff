/**
 * Runs a shell script inside a throw-away user-mode-linux (UML) guest kernel.
 *
 * Why: the host kernel this project is developed on lacks ipvlan, 8021q and dummy. Debian's
 * `user-mode-linux` package ships a complete kernel as a host program (/usr/bin/linux.uml) plus its
 * modules (/usr/lib/uml/modules/<version>/), so those link kinds can be tested for real, as root of
 * a separate kernel, without touching the host's network.
 *
 * How: the guest mounts the host's `/` read-write (hostfs), so it sees the repository, node and
 * iproute2 at their host paths. A generated init script mounts proc/sys, loads the network modules
 * with `busybox insmod`, mounts a guest-only tmpfs on /run (for `ip netns`), runs the caller's
 * script and powers the guest off. UML's exit code is not the script's, so everything the guest
 * reports goes through files in a temp dir the host created (visible to both sides):
 *
 *   $UML_DIR/started     /proc/uptime when init started     $UML_DIR/modules   modules that failed to load
 *   $UML_DIR/exit        exit status of the caller's script $UML_DIR/guest.log stdout+stderr of the guest
 *   $UML_RESULT          whatever the caller's script writes there (returned as `result`)
 *
 * Nothing is written outside that temp dir: TMPDIR (UML's memory backing file) and uml_dir (its
 * mconsole socket and pid file, ~/.uml by default) point into it, and it is deleted afterwards.
 * Everything is bounded: with `suite`, every phase has a budget from test/uml/budgets.json (see
 * budget.ts): boot, module loading, the guest script's start, each step the guest announces in
 * $UML_DIR/progress.json, the whole script, the shutdown; the first one overrun ends the run with
 * "guest step 'X' took longer than N s". With `timeoutMs`, the whole run is bounded too. On expiry the
 * UML process group and every descendant are SIGKILLed.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { descendantsOf } from '../lab/procfs';
import { UnderlayError, type ErrorCode } from '@underlay/core';
import { budgetScale, durationTable, explainBudget, hostCalibration, hostPhaseBudgetMs, overrunSteps, BUDGETS, type BudgetedStep, type Calibration, type HostPhase } from './budget';

/** The modules the network tests need, in dependency order (paths under <modules>/kernel, without .ko). */
export const NETWORK_MODULES = [
  'lib/crc-ccitt',
  'net/ipv6/ipv6',
  'drivers/net/ipvlan/ipvlan',
  'drivers/net/dummy',
  'net/llc/llc',
  'net/802/stp',
  'net/802/garp',
  'net/802/mrp',
  'net/8021q/8021q',
  'drivers/net/macvlan',
  'drivers/net/veth',
  'net/bridge/bridge',
] as const;

export const DEFAULT_UML_KERNEL = '/usr/bin/linux.uml';
export const DEFAULT_UML_MODULES_ROOT = '/usr/lib/uml/modules';
const INSTALL_HINT = 'install Debian package user-mode-linux (apt-get install -y user-mode-linux)';

export interface UmlOptions {
  /** Shell script (POSIX sh) run in the guest as root after the setup, cwd = `cwd` (default: the repository root). */
  script: string;
  /**
   * The suite's budgets (a key of test/uml/budgets.json `suites`): the host watches every phase and every step the
   * guest announces (guestBudgets in guest-common.js) and ends the run at the first overrun, naming it.
   */
  suite?: string;
  /** Hard limit for the whole run (boot + script + shutdown), on top of `suite`'s budgets. One of the two is needed. */
  timeoutMs?: number;
  /** Guest memory in MiB (default 512). */
  memMb?: number;
  /** Modules to load, relative to <modules>/kernel without the .ko suffix (default NETWORK_MODULES). */
  modules?: readonly string[];
  /** Extra environment for the script (exported in the guest). */
  env?: Readonly<Record<string, string>>;
  /** Working directory of the script in the guest (default: the repository root). */
  cwd?: string;
  /** UML kernel binary (default $UML_KERNEL or /usr/bin/linux.uml). */
  kernel?: string;
  /** Keep the temp dir (its path is in the result) instead of deleting it. */
  keepDir?: boolean;
  /**
   * Host CPU to pin UML to (default: the last CPU this process may use; 'none' = no pinning). UML runs
   * every guest syscall and page fault as a ptrace round trip between host processes; spread over
   * several CPUs of a VM each round trip pays a cross-CPU wake-up, which made guest programs about
   * 5x slower here (node start 1.2 s instead of 0.25 s). The guest is uniprocessor anyway.
   */
  cpu?: number | 'none';
}

export interface UmlTimings {
  /** Host spawn of linux.uml until the guest's init started. */
  bootMs?: number;
  /** Module loading and mounts (init start until the caller's script started). */
  setupMs?: number;
  /** The caller's script. */
  scriptMs?: number;
  /** The script's end until the UML process exited (poweroff). */
  shutdownMs?: number;
  totalMs: number;
  /** With `suite` (host watchdog, ±250 ms): the guest script's start until its first step, and the longest gap between steps. */
  scriptStartMs?: number;
  longestIdleMs?: number;
}

export interface UmlResult {
  /** Contents of $UML_RESULT; undefined when the script did not create it. */
  result: string | undefined;
  /** Exit status of the caller's script (the guest reached its end: otherwise runInUml rejects). */
  exitCode: number;
  /** How the UML host process ended (normally code 0 after poweroff). */
  umlExit: { code: number | null; signal: NodeJS.Signals | null };
  /** UML console: kernel messages. */
  log: string;
  /** stdout + stderr of the init script and the caller's script. */
  guestLog: string;
  timings: UmlTimings;
  /** The host CPU UML was pinned to (undefined: not pinned). */
  cpu?: number;
  /** The host's calibration (with `suite`): the factor its phase budgets were multiplied by. */
  hostCalibration?: Calibration;
  /** The temp dir (already deleted unless keepDir). */
  dir: string;
}

export type UmlErrorKind = 'unavailable' | 'timeout' | 'modules' | 'crashed';

const UML_ERROR_CODE: Record<UmlErrorKind, ErrorCode> = { unavailable: 'unavailable', timeout: 'unavailable', modules: 'not-found', crashed: 'internal' };

/** A failure to run user-mode Linux (`kind` says which); not retriable: the same run fails the same way. */
export class UmlError extends UnderlayError {
  constructor(
    readonly kind: UmlErrorKind,
    message: string,
    readonly log = '',
    readonly guestLog = '',
  ) {
    super(
      UML_ERROR_CODE[kind],
      message +
        (guestLog ? `\n--- guest output (tail) ---\n${tail(guestLog)}` : '') +
        (log ? `\n--- UML console (tail) ---\n${tail(log)}` : ''),
      { retriable: false },
    );
    this.name = 'UmlError';
  }
}

/** Last `lines` lines of a log. */
export function tail(text: string, lines = 40): string {
  const all = text.replace(/\r/g, '').trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}

export interface UmlEnvironment {
  kernel: string;
  version: string;
  modulesDir: string;
  /** Module name (as in `modules`) -> the file to insmod and whether it must be decompressed first. */
  modules: Array<{ name: string; file: string; compression?: 'xz' | 'zst' | 'gz' }>;
}

/**
 * Finds the UML kernel and the modules; throws UmlError('unavailable') naming what is missing.
 * Cheap: runs `linux.uml --version` (prints the release and exits without booting).
 */
export function checkUml(kernelPath?: string, modules: readonly string[] = NETWORK_MODULES): UmlEnvironment {
  const kernel = kernelPath ?? process.env.UML_KERNEL ?? DEFAULT_UML_KERNEL;
  if (!fs.existsSync(kernel)) throw new UmlError('unavailable', `user-mode-linux kernel ${kernel} not found: ${INSTALL_HINT}`);
  let version: string;
  try {
    version = execFileSync(kernel, ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (e) {
    throw new UmlError('unavailable', `${kernel} --version failed: ${(e as Error).message}`);
  }
  if (!/^\d+\.\d+\S*$/.test(version)) throw new UmlError('unavailable', `${kernel} --version printed ${JSON.stringify(version)}, not a kernel release`);
  const modulesDir = path.join(DEFAULT_UML_MODULES_ROOT, version);
  if (!fs.existsSync(modulesDir)) throw new UmlError('unavailable', `UML modules for ${version} not found in ${modulesDir}: ${INSTALL_HINT}`);
  const found: UmlEnvironment['modules'] = [];
  const missing: string[] = [];
  for (const name of modules) {
    const base = path.join(modulesDir, 'kernel', `${name}.ko`);
    const hit = (
      [
        ['', undefined],
        ['.xz', 'xz'],
        ['.zst', 'zst'],
        ['.gz', 'gz'],
      ] as const
    ).find(([ext]) => fs.existsSync(base + ext));
    if (!hit) missing.push(name);
    else found.push({ name, file: base + hit[0], compression: hit[1] });
  }
  if (missing.length) throw new UmlError('unavailable', `UML modules missing in ${modulesDir}/kernel: ${missing.map((m) => `${m}.ko`).join(', ')}`);
  return { kernel, version, modulesDir, modules: found };
}

const REPO = path.resolve(__dirname, '../..');

/** Single-quotes a string for sh. */
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function initScript(o: { dir: string; modules: Array<{ name: string; file: string }>; env: Record<string, string>; cwd: string }): string {
  const exports = Object.entries(o.env)
    .map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`invalid environment variable name ${JSON.stringify(k)}`);
      return `export ${k}=${q(v)}`;
    })
    .join('\n');
  const d = q(o.dir);
  return `#!/bin/sh
# Generated by test/uml/uml.ts: init (pid 1) of a user-mode-linux guest. Must never exit: it powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
export UML_DIR=${d} UML_RESULT=${q(path.join(o.dir, 'result'))}
${exports}
exec >>${d}/guest.log 2>&1 </dev/null
off() { sync; busybox poweroff -f; busybox halt -f; while :; do sleep 60; done; }
mount -t proc proc /proc || off
mount -t sysfs sysfs /sys || off
cat /proc/uptime > ${d}/started
failed=
${o.modules.map((m) => `[ -d ${q(`/sys/module/${path.basename(m.name).replace(/-/g, '_')}`)} ] || busybox insmod ${q(m.file)} || failed="$failed ${m.name}"`).join('\n')}
echo "$failed" > ${d}/modules
[ -z "$failed" ] || off
mount -t tmpfs -o mode=0755 tmpfs /run || off
ip link set lo up
cd ${q(o.cwd)} || off
cat /proc/uptime > ${d}/script-started
/bin/sh ${d}/script.sh
echo $? > ${d}/exit.tmp && mv ${d}/exit.tmp ${d}/exit
off
`;
}

/** The highest CPU in this process's affinity mask (/proc/self/status Cpus_allowed_list), if known. */
function lastAllowedCpu(): number | undefined {
  const line = (readOr('/proc/self/status') ?? '').split('\n').find((l) => l.startsWith('Cpus_allowed_list:'));
  const nums = line?.slice('Cpus_allowed_list:'.length).match(/\d+/g);
  return nums?.length ? Number(nums[nums.length - 1]) : undefined;
}

/** util-linux taskset (execs the command: the PID stays the one of linux.uml). */
function taskset(): string | undefined {
  return ['/usr/bin/taskset', '/bin/taskset'].find((f) => fs.existsSync(f));
}

function killTree(pid: number): void {
  // UML runs guest processes as ptraced host children and a few helper threads/processes; it is
  // started in its own process group (detached), so kill the group plus any descendant that left it.
  for (const p of [pid, ...descendantsOf(pid).map((d) => d.pid)]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

const mtime = (f: string) => {
  try {
    return fs.statSync(f).mtimeMs;
  } catch {
    return undefined;
  }
};
const readOr = (f: string) => {
  try {
    return fs.readFileSync(f, 'utf8');
  } catch {
    return undefined;
  }
};

/** What the guest's progress.json says (guestBudgets in guest-common.js). */
interface GuestProgress {
  seq: number;
  factor: number;
  scriptBudgetMs: number;
  running: Array<{ seq: number; name: string; budgetMs: number }>;
  last?: string;
}

/**
 * The host's side of the budgets: looks at the run's files every 250 ms and says which phase or guest step
 * overran its budget. Times are the host's, from when it first saw each phase or step (within 250 ms). A guest
 * step gets its own budget plus a grace (the guest stops its slow steps itself and records them; the host only
 * steps in when it does not); between steps, the guest has the "between guest steps" budget.
 */
class Watchdog {
  private readonly seen = new Map<string, number>();
  /**
   * Time the guest has between its steps (and to stop a slow step itself): the host's budget, scaled up when the
   * guest measured itself slower than the host did (its work between steps runs at the guest's speed).
   */
  private graceFor(p?: GuestProgress): number {
    const host = hostCalibration().factor;
    return Math.round(hostPhaseBudgetMs('between guest steps') * Math.max(1, (p?.factor ?? host) / host));
  }
  private grace = hostPhaseBudgetMs('between guest steps');
  /** What the watchdog saw (host clock): the guest script's start until its first step, the longest time between steps. */
  readonly observed: { scriptStartMs?: number; longestIdleMs: number } = { longestIdleMs: 0 };

  constructor(
    private readonly dir: string,
    private readonly spawned: number,
  ) {}

  /** When a phase or step was first seen (now, if this is the first time). */
  private since(key: string): number {
    let t = this.seen.get(key);
    if (t === undefined) this.seen.set(key, (t = Date.now()));
    return t;
  }

  private phase(phase: HostPhase, since: number): string | undefined {
    const budget = hostPhaseBudgetMs(phase);
    if (Date.now() - since <= budget) return undefined;
    const c = hostCalibration();
    return `guest step '${phase}' took longer than ${budget / 1000} s (${explainBudget(BUDGETS.host[phase], c.factor)}; the host stopped the guest)`;
  }

  /** Undefined while every budget holds, else the message naming what overran. */
  check(): string | undefined {
    const has = (f: string) => fs.existsSync(path.join(this.dir, f));
    if (!has('started')) return this.phase('boot', this.spawned);
    if (!has('script-started')) return this.phase('module loading and mounts', this.since('started'));
    if (has('exit')) return this.phase('shutdown', this.since('exit'));
    const scriptStart = this.since('script-started');
    let p: GuestProgress | undefined;
    try {
      p = JSON.parse(fs.readFileSync(path.join(this.dir, 'progress.json'), 'utf8')) as GuestProgress;
    } catch {
      /* not written yet (or mid-rename: the next look sees it) */
    }
    if (!p) return this.phase('guest script start', scriptStart);
    this.grace = this.graceFor(p);
    this.observed.scriptStartMs ??= this.since('first progress') - scriptStart;
    if (Date.now() - scriptStart > p.scriptBudgetMs + this.grace) {
      return `the guest script took longer than ${(p.scriptBudgetMs + this.grace) / 1000} s in all (its budget at machine factor ${p.factor}, plus ${this.grace / 1000} s); the host stopped the guest`;
    }
    for (const st of p.running) {
      if (Date.now() - this.since(`step ${st.seq}`) > st.budgetMs + this.grace) {
        return `guest step '${st.name}' took longer than ${st.budgetMs / 1000} s (plus ${this.grace / 1000} s for the guest to stop it itself, at machine factor ${p.factor}); the host stopped the guest`;
      }
    }
    if (p.running.length === 0) {
      const idle = this.since(`idle ${p.seq}`);
      this.observed.longestIdleMs = Math.max(this.observed.longestIdleMs, Date.now() - idle);
      if (Date.now() - idle > this.grace) return `guest step 'between guest steps' (after '${p.last ?? 'the start'}') took longer than ${this.grace / 1000} s; the host stopped the guest`;
    }
    return undefined;
  }
}

/** Boots a UML guest, runs `script` in it, waits for poweroff, returns what the guest wrote. */
export async function runInUml(opts: UmlOptions): Promise<UmlResult> {
  const env = checkUml(opts.kernel, opts.modules ?? NETWORK_MODULES);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'underlay-uml-'));
  try {
    // Compressed modules: busybox insmod wants plain ELF, so decompress on the host into our dir.
    const modules = env.modules.map((m) => {
      if (!m.compression) return m;
      const tool = { xz: ['xz', '-dc'], zst: ['zstd', '-dc'], gz: ['gzip', '-dc'] }[m.compression];
      const out = path.join(dir, 'modules', `${m.name.replace(/\//g, '_')}.ko`);
      fs.mkdirSync(path.dirname(out), { recursive: true });
      try {
        fs.writeFileSync(out, execFileSync(tool[0]!, [tool[1]!, m.file], { maxBuffer: 64 << 20, timeout: 30_000 }));
      } catch (e) {
        throw new UmlError('unavailable', `cannot decompress ${m.file} with ${tool[0]}: ${(e as Error).message}`);
      }
      return { name: m.name, file: out };
    });
    fs.writeFileSync(path.join(dir, 'script.sh'), opts.script);
    const init = path.join(dir, 'init.sh');
    const budgetEnv: Record<string, string> = opts.suite !== undefined && process.env.UML_BUDGET_SCALE ? { UML_BUDGET_SCALE: String(budgetScale()) } : {};
    if (opts.suite !== undefined) hostCalibration(); // before the clock starts
    fs.writeFileSync(init, initScript({ dir, modules, env: { UML_REPO: REPO, ...budgetEnv, ...opts.env }, cwd: opts.cwd ?? REPO }), { mode: 0o755 });
    const args = [
      `mem=${opts.memMb ?? 512}M`,
      `uml_dir=${dir}`,
      'umid=uml',
      'root=/dev/root',
      'rootfstype=hostfs',
      'rootflags=/',
      'rw',
      `init=${init}`,
      'con=null',
      'con0=fd:0,fd:1',
    ];
    // The console goes to a file: through a pipe UML loses the last messages when it powers off.
    const consoleFile = path.join(dir, 'console.log');
    const consoleFd = fs.openSync(consoleFile, 'w');
    const started = Date.now();
    const cpu = opts.cpu ?? lastAllowedCpu();
    const pinned = cpu === 'none' || !taskset() ? undefined : cpu;
    const [cmd, argv] = pinned === undefined ? [env.kernel, args] : [taskset()!, ['-c', String(pinned), env.kernel, ...args]];
    const child = spawn(cmd, argv, {
      cwd: dir, // UML looks for ./root_fs (ubd0) here; nothing is there, which is fine
      env: { ...process.env, TMPDIR: dir }, // memory backing file (otherwise /dev/shm)
      stdio: ['ignore', consoleFd, consoleFd],
      detached: true, // own process group, killed as a whole on timeout
    });
    fs.closeSync(consoleFd);
    if (opts.timeoutMs === undefined && opts.suite === undefined) throw new Error('runInUml needs suite (budgets) or timeoutMs');
    let timedOut: string | undefined;
    const stop = (why: string) => {
      if (timedOut) return;
      timedOut = why;
      if (child.pid) killTree(child.pid);
    };
    const watchdog = opts.suite !== undefined ? new Watchdog(dir, started) : undefined;
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; spawnError?: Error }>((resolve) => {
      const timer = opts.timeoutMs !== undefined ? setTimeout(() => stop(`UML guest did not finish within ${opts.timeoutMs} ms (killed)`), opts.timeoutMs) : undefined;
      const poll = watchdog
        ? setInterval(() => {
            const over = watchdog.check();
            if (over) stop(over);
          }, 250)
        : undefined;
      const done = (r: { code: number | null; signal: NodeJS.Signals | null; spawnError?: Error }) => {
        clearTimeout(timer);
        clearInterval(poll);
        resolve(r);
      };
      child.on('error', (e) => done({ code: null, signal: null, spawnError: e }));
      child.on('close', (code, signal) => done({ code, signal }));
    });
    const ended = Date.now();
    // Normally nothing is left after poweroff; make sure of it.
    if (child.pid && groupAlive(child.pid)) killTree(child.pid);
    const log = readOr(consoleFile) ?? '';
    const guestLog = readOr(path.join(dir, 'guest.log')) ?? '';
    if (exit.spawnError) throw new UmlError('unavailable', `cannot start ${env.kernel}: ${exit.spawnError.message}`, log, guestLog);
    if (timedOut) throw new UmlError('timeout', timedOut, log, guestLog);

    const tStarted = mtime(path.join(dir, 'started'));
    const tScript = mtime(path.join(dir, 'script-started'));
    const tExit = mtime(path.join(dir, 'exit'));
    const timings: UmlTimings = {
      bootMs: tStarted !== undefined ? Math.round(tStarted - started) : undefined,
      setupMs: tStarted !== undefined && tScript !== undefined ? Math.round(tScript - tStarted) : undefined,
      scriptMs: tScript !== undefined && tExit !== undefined ? Math.round(tExit - tScript) : undefined,
      shutdownMs: tExit !== undefined ? Math.round(ended - tExit) : undefined,
      totalMs: ended - started,
      ...(watchdog ? { scriptStartMs: watchdog.observed.scriptStartMs, longestIdleMs: watchdog.observed.longestIdleMs } : {}),
    };
    const failedModules = readOr(path.join(dir, 'modules'));
    if (tStarted === undefined) throw new UmlError('crashed', `UML exited (code ${exit.code}, signal ${exit.signal}) before the guest init ran`, log, guestLog);
    if (failedModules === undefined) throw new UmlError('crashed', 'UML guest stopped while loading modules', log, guestLog);
    if (failedModules.trim()) throw new UmlError('modules', `UML guest could not load modules: ${failedModules.trim()} (from ${env.modulesDir})`, log, guestLog);
    const exitText = readOr(path.join(dir, 'exit'));
    if (exitText === undefined) throw new UmlError('crashed', `UML exited (code ${exit.code}, signal ${exit.signal}) before the script finished`, log, guestLog);
    return {
      result: readOr(path.join(dir, 'result')),
      exitCode: Number(exitText.trim()),
      umlExit: { code: exit.code, signal: exit.signal },
      log,
      guestLog,
      timings,
      cpu: pinned,
      ...(opts.suite !== undefined ? { hostCalibration: hostCalibration() } : {}),
      dir,
    };
  } finally {
    if (!opts.keepDir) fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  }
}

// ------------------------------------------------------------------------------------------------
// Guest scripts that record their run as JSON (test/uml/guest-common.js), for the e2e tests using them.
// ------------------------------------------------------------------------------------------------

/** One step a guest script recorded (guest-common.js `step`, `background`, or a wait). */
export interface GuestStep extends BudgetedStep {
  name: string;
  cmd?: string;
  code: number | string;
  ms?: number;
  stdout?: string;
  stderr?: string;
}

/** The calibration and budgets a guest recorded (guestBudgets `info` in guest-common.js). */
export interface GuestBudgetInfo {
  suite: string;
  nodeStartMs: number;
  runsMs: number[];
  referenceNodeStartMs: number;
  ratio: number;
  factor: number;
  scale: number;
  margin: number;
  floorMs: number;
  scriptBudgetMs: number;
}

/**
 * After a guest run with budgets: prints the calibration and every step's duration against its budget (and the
 * longest time per budget key, the figures budgets.json is made of), then throws when a step overran its
 * budget, naming each one: "guest step 'docker run' took longer than 40 s (…)".
 */
export function reportGuestRun(suite: string, run: UmlResult, r: { steps: GuestStep[]; budgets?: GuestBudgetInfo; durations?: Record<string, number>; error?: string }): void {
  const b = r.budgets;
  const h = run.hostCalibration;
  const t = run.timings;
  console.log(
    `${suite}: machine factor ${b?.factor} (node starts in ${b?.nodeStartMs} ms in the guest [${b?.runsMs.join(', ')}], ${b?.referenceNodeStartMs} ms on the reference machine), ` +
      `host factor ${h?.factor} (node starts in ${h?.nodeStartMs} ms on the host, ${BUDGETS.calibration.hostNodeStartMs} ms there); margin ${b?.margin}, floor ${(b?.floorMs ?? 0) / 1000} s; ` +
      `host phases: boot ${t.bootMs} ms, modules ${t.setupMs} ms, guest script start ${t.scriptStartMs} ms, script ${t.scriptMs} ms (budget ${(b?.scriptBudgetMs ?? 0) / 1000} s), ` +
      `longest between steps ${t.longestIdleMs} ms, shutdown ${t.shutdownMs} ms\n` +
      `measured step durations (ms, of budget):\n${durationTable(r.steps)}\n` +
      `longest per budget key (ms): ${JSON.stringify({ script: t.scriptMs, ...r.durations })}`,
  );
  const over = overrunSteps(r.steps);
  if (over.length) throw new Error(`${over.join('\n')}\n${describeSteps(r.steps)}`);
  if (r.error && /slower than the one the budgets were measured on/.test(r.error)) throw new Error(r.error);
}

/** One line per step: name, exit, time, and the last lines of its stderr (or stdout) when it failed. */
export function describeSteps(steps: readonly GuestStep[]): string {
  return steps
    .map((s) => {
      const err = s.error ? `  <- ${s.error}` : s.code !== 0 && (s.stderr || s.stdout) ? `  <- ${(s.stderr || s.stdout || '').split('\n').slice(-3).join(' | ')}` : '';
      const budget = s.budgetMs !== undefined ? ` of ${s.budgetMs / 1000} s` : '';
      return `  ${s.code === 0 ? 'ok  ' : 'FAIL'} ${s.name} (exit ${s.code}${s.ms !== undefined ? `, ${s.ms} ms${budget}` : ''})${err}`;
    })
    .join('\n');
}

/**
 * Runs a guest script in UML (`opts.script` starts it with "$UML_RESULT") and returns the JSON it wrote
 * there as `result`. First checks that every path in `required` (absolute, or under the repository)
 * exists and that UML is available (runInUml's checkUml); throws, with the guest's output, when it wrote nothing
 * or not JSON.
 */
export async function runGuestScript<T>(required: readonly string[], opts: UmlOptions): Promise<{ run: UmlResult; result: T }> {
  const missing = required.filter((f) => !fs.existsSync(path.resolve(REPO, f)));
  if (missing.length) throw new Error(`missing: ${missing.join(', ')} (install docker.io; build with \`npx tsc -b\`)`);
  const run = await runInUml(opts); // checks UML first: UmlError('unavailable') with what is missing
  if (run.result === undefined) {
    throw new Error(`the guest wrote no result (script exit ${run.exitCode})\n--- guest output ---\n${tail(run.guestLog)}\n--- UML console ---\n${tail(run.log)}`);
  }
  try {
    return { run, result: JSON.parse(run.result) as T };
  } catch (e) {
    throw new Error(`the guest's result is not JSON (${(e as Error).message}): ${run.result.slice(0, 2000)}`);
  }
}
