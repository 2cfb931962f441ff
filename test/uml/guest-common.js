// Scaffolding shared by the guest scripts that run INSIDE a user-mode-linux guest (test/uml/uml.ts) with a
// plain `node` (so CommonJS JavaScript, nothing to compile): test/uml/docker/guest.js and
// test/uml/routes/guest.js. A guest records every step of its run in one JSON object and rewrites its
// RESULT_FILE after each step, so a hang or crash still leaves what happened so far. Every step runs within
// its budget (guestBudgets: measured duration × margin × this machine's factor, from test/uml/budgets.json;
// see test/uml/budget.ts), and the running steps are published in $UML_DIR/progress.json for the host's
// watchdog.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const BUDGETS = require('./budgets.json');

/** The repository root (the guest sees the host's / through hostfs). */
const REPO = path.resolve(__dirname, '../..');
const DOCKER = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
/** The busybox image the guests import (see busyboxTarScript) and run containers of. */
const IMAGE = 'underlay-busybox:latest';

/** RESULT_FILE, the first argument; prints `usage` and exits 2 without it. */
function resultFileArg(usage) {
  const resultFile = process.argv[2];
  if (!resultFile) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return resultFile;
}

const cut = (s, n = 4000) => (s.length > n ? `${s.slice(0, n / 2)}\n...[${s.length - n} chars cut]...\n${s.slice(-n / 2)}` : s);
/** The last n lines of a file (or why it could not be read). */
const tailOf = (f, n = 60) => {
  try {
    return fs.readFileSync(f, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
  } catch (e) {
    return `(${e.message})`;
  }
};

function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * The guest's budgets for `suite` (a key of budgets.json `suites`), after calibrating this machine: `node -e 0`
 * three times (median) against the reference machine's figure; factor = that ratio, at least 1 (times
 * UML_BUDGET_SCALE, a debugging knob). Returns:
 *   ms(key): the budget of a step: max(floorMs, measured × margin) × factor × scale; throws for a key with no
 *     measurement (every step must have one).
 *   overrun(name, key): "guest step 'NAME' took longer than N s (measured … × margin … × machine factor …)".
 *   progress(running, last): writes $UML_DIR/progress.json ({ factor, scriptBudgetMs, running: [{ seq, name,
 *     budgetMs }], last }) for the host's watchdog (nothing outside UML).
 *   tooSlow: a message when this machine is over maxFactor times slower than the reference (then give up).
 *   info: what to record in the result (calibration, factor, margin, scriptBudgetMs).
 */
function guestBudgets(suite) {
  const table = BUDGETS.suites[suite];
  if (!table) throw new Error(`no measured durations for suite ${suite} in test/uml/budgets.json`);
  const runsMs = [];
  for (let i = 0; i < 3; i++) {
    const t0 = process.hrtime.bigint();
    spawnSync(process.execPath, ['-e', '0'], { stdio: 'ignore', timeout: 120_000 });
    runsMs.push(Number((process.hrtime.bigint() - t0) / 1000000n));
  }
  const nodeStartMs = [...runsMs].sort((a, b) => a - b)[1];
  const ratio = Math.round((nodeStartMs / BUDGETS.calibration.guestNodeStartMs) * 100) / 100;
  const factor = Math.max(1, ratio);
  const scale = Number(process.env.UML_BUDGET_SCALE || 1) || 1;
  const budget = (measured) => Math.ceil(Math.max(BUDGETS.floorMs, measured * BUDGETS.margin) * factor * scale);
  const measuredOf = (key) => {
    const m = table.steps[key];
    if (m === undefined) throw new Error(`no measured duration for guest step '${key}' (suite ${suite}) in test/uml/budgets.json`);
    return m;
  };
  const ms = (key) => budget(measuredOf(key));
  const explain = (measured) =>
    `${measured * BUDGETS.margin < BUDGETS.floorMs ? `floor ${BUDGETS.floorMs / 1000} s` : `measured ${measured / 1000} s × margin ${BUDGETS.margin}`} × machine factor ${factor}` +
    (scale !== 1 ? ` × UML_BUDGET_SCALE ${scale}` : '');
  const overrun = (name, key) => `guest step '${name}' took longer than ${ms(key) / 1000} s (${explain(measuredOf(key))})`;
  const scriptBudgetMs = budget(table.scriptMs);
  const progressFile = process.env.UML_DIR ? path.join(process.env.UML_DIR, 'progress.json') : undefined;
  let seq = 0;
  const progress = (running, last) => {
    if (!progressFile) return;
    fs.writeFileSync(`${progressFile}.tmp`, JSON.stringify({ seq: ++seq, factor, scriptBudgetMs, running, last }));
    fs.renameSync(`${progressFile}.tmp`, progressFile);
  };
  const tooSlow =
    factor > BUDGETS.maxFactor
      ? `this machine runs the UML guest ${factor}x slower than the one the budgets were measured on (node starts in ${nodeStartMs} ms in the guest, ` +
        `${BUDGETS.calibration.guestNodeStartMs} ms there; ${BUDGETS.measuredOn}); the budgets scale up to ${BUDGETS.maxFactor}x (test/uml/budgets.json)`
      : undefined;
  const info = { suite, nodeStartMs, runsMs, referenceNodeStartMs: BUDGETS.calibration.guestNodeStartMs, ratio, factor, scale, margin: BUDGETS.margin, floorMs: BUDGETS.floorMs, scriptBudgetMs };
  return { suite, factor, scale, scriptBudgetMs, ms, overrun, progress, tooSlow, info };
}

/**
 * The record of a guest run: `out` (with a `steps` array, a `durations` map and a `totalMs`), written to
 * `resultFile` by `save` (through a temp file and a rename). `budgets` (guestBudgets) bounds every step; the
 * longest time each budget key took is kept in `out.durations` (quiet steps included), to measure budgets from.
 * The functions returned record into it:
 *   step(name, cmd, args, { budget, env, input, quiet }): runs a command within the budget of key `budget`
 *     (default: the name); records and returns { name, cmd, code, ms, budget, budgetMs, stdout, stderr };
 *     code 'timeout' and an `error` naming the step when it overran (it is killed). Never throws. `quiet`:
 *     recorded only when it fails.
 *   sh(name, script, o): step with /bin/sh -c script.
 *   dockerStep(dockerEnv, name, args, o): step with the docker CLI, `dockerEnv` added to its environment.
 *   background(name, cmd, args, logFile, env): starts a long-running process (detached, output appended to
 *     logFile), records it and its pid in `procs[name]`; returns the ChildProcess.
 *   waitFor(what, fn, budget, every = 200, abort): polls fn until it returns a truthy value or the budget of key
 *     `budget` (default "wait <what>") passes, and records the wait. Returns the milliseconds it took (0 when fn
 *     was true at once), or undefined on timeout or when `abort()` returns a reason to stop (recorded as
 *     "aborted: <reason>"): test with `=== undefined`.
 *   timed(name, budget, fn): runs fn (which bounds itself) as a step for the watchdog and the record.
 */
function recorder(resultFile, out, budgets) {
  const t0 = Date.now();
  const procs = {};
  out.durations = out.durations || {};
  const running = [];
  let seq = 0;
  let last;
  const save = () => {
    out.totalMs = Date.now() - t0;
    fs.writeFileSync(`${resultFile}.tmp`, JSON.stringify(out, null, 1));
    fs.renameSync(`${resultFile}.tmp`, resultFile);
  };
  const begin = (name, budgetMs) => {
    const e = { seq: ++seq, name, budgetMs };
    running.push(e);
    budgets.progress(running, last);
    return e;
  };
  const end = (e, key, ms) => {
    running.splice(running.indexOf(e), 1);
    last = e.name;
    budgets.progress(running, last);
    out.durations[key] = Math.max(out.durations[key] || 0, ms);
  };
  function step(name, cmd, args, { budget, env, input, quiet } = {}) {
    const key = budget || name;
    const budgetMs = budgets.ms(key);
    const started = Date.now();
    const e = begin(name, budgetMs);
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: budgetMs, killSignal: 'SIGKILL', env: { ...process.env, ...env }, input, maxBuffer: 16 << 20 });
    const ms = Date.now() - started;
    end(e, key, ms);
    const timedOut = Boolean(r.error && r.error.code === 'ETIMEDOUT');
    const rec = {
      name,
      cmd: [cmd, ...args].join(' '),
      code: timedOut ? 'timeout' : r.status === null ? (r.error ? `error: ${r.error.message}` : `signal ${r.signal}`) : r.status,
      ms,
      budget: key,
      budgetMs,
      ...(timedOut ? { error: budgets.overrun(name, key) } : {}),
      stdout: cut((r.stdout || '').trim()),
      stderr: cut((r.stderr || '').trim()),
    };
    if (!quiet || rec.code !== 0) {
      out.steps.push(rec);
      save();
    }
    return rec;
  }
  const sh = (name, script, o) => step(name, '/bin/sh', ['-c', script], o);
  const dockerStep = (dockerEnv, name, args, o = {}) => step(name, DOCKER, args, { ...o, env: { ...dockerEnv, ...o.env } });
  function background(name, cmd, args, logFile, env) {
    const fd = fs.openSync(logFile, 'a');
    const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: { ...process.env, ...env }, detached: true });
    fs.closeSync(fd);
    child.unref();
    procs[name] = child.pid;
    out.steps.push({ name: `start ${name}`, cmd: [cmd, ...args].join(' '), code: 0, pid: child.pid });
    save();
    return child;
  }
  function waitFor(what, fn, budget, every = 200, abort) {
    const name = `wait ${what}`;
    const key = budget || name;
    const budgetMs = budgets.ms(key);
    const started = Date.now();
    const e = begin(name, budgetMs);
    let v;
    let why;
    while (!(v = fn()) && !(why = abort && abort()) && Date.now() - started < budgetMs) sleep(every);
    const ms = Date.now() - started;
    end(e, key, ms);
    const code = v ? 0 : why ? `aborted: ${why}` : 'timeout';
    out.steps.push({ name, code, ms, budget: key, budgetMs, ...(code === 'timeout' ? { error: budgets.overrun(name, key) } : {}) });
    save();
    return v ? ms : undefined;
  }
  function timed(name, budget, fn) {
    const key = budget || name;
    const budgetMs = budgets.ms(key);
    const started = Date.now();
    const e = begin(name, budgetMs);
    try {
      return fn(budgetMs);
    } finally {
      const ms = Date.now() - started;
      end(e, key, ms);
      out.steps.push({ name, code: 0, ms, budget: key, budgetMs });
      save();
    }
  }
  return { out, procs, save, step, sh, dockerStep, background, waitFor, timed };
}

/** A shell script that makes `${dir}/busybox.tar`: a root with /bin/busybox and one symlink per applet. */
const busyboxTarScript = (dir) => `set -e
bb=$(command -v busybox)
r=${dir}/bbroot
mkdir -p $r/bin $r/etc $r/root $r/var $r/tmp
chmod 1777 $r/tmp
cp "$bb" $r/bin/busybox && chmod 755 $r/bin/busybox
for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
busybox tar -C $r -cf ${dir}/busybox.tar .
rm -rf $r`;

/** `docker import` arguments that make IMAGE from `${dir}/busybox.tar`. */
const importBusyboxArgs = (dir) => ['import', '--change', 'CMD ["sh"]', `${dir}/busybox.tar`, IMAGE];

/**
 * dockerd flags for a daemon whose files are all under `dir` (daemon.json, data, exec, docker.pid,
 * docker.sock): no bridge, iptables, masquerading or userland proxy; vfs storage; the cgroupfs driver.
 */
const dockerdArgs = (dir) => [
  '--config-file', `${dir}/daemon.json`, '--data-root', `${dir}/data`, '--exec-root', `${dir}/exec`, '--pidfile', `${dir}/docker.pid`,
  '-H', `unix://${dir}/docker.sock`,
  '--bridge=none', '--iptables=false', '--ip6tables=false', '--ip-masq=false', '--userland-proxy=false',
  '--storage-driver=vfs', '--exec-opt', 'native.cgroupdriver=cgroupfs',
];

module.exports = { REPO, DOCKER, IMAGE, BUDGETS, resultFileArg, cut, tailOf, sleep, guestBudgets, recorder, busyboxTarScript, importBusyboxArgs, dockerdArgs };
