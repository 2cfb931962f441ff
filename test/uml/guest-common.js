// Scaffolding shared by the guest scripts that run INSIDE a user-mode-linux guest (test/uml/uml.ts) with a
// plain `node` (so CommonJS JavaScript, nothing to compile): test/uml/docker/guest.js and
// test/uml/routes/guest.js. A guest records every step of its run in one JSON object and rewrites its
// RESULT_FILE after each step, so a hang or crash still leaves what happened so far.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

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
 * The record of a guest run: `out` (with a `steps` array and a `totalMs`), written to `resultFile` by
 * `save` (through a temp file and a rename). The functions returned record into it:
 *   step(name, cmd, args, { timeoutMs, env, input, quiet }): runs a command with a timeout; records and
 *     returns { name, cmd, code, ms, stdout, stderr }; never throws. `quiet`: recorded only when it fails.
 *   sh(name, script, o): step with /bin/sh -c script.
 *   dockerStep(dockerEnv, name, args, o): step with the docker CLI, `dockerEnv` added to its environment.
 *   background(name, cmd, args, logFile, env): starts a long-running process (detached, output appended to
 *     logFile), records it and its pid in `procs[name]`; returns the ChildProcess.
 *   waitFor(what, fn, timeoutMs, every = 200): polls and records the wait; the ms it took, or undefined on timeout.
 */
function recorder(resultFile, out) {
  const t0 = Date.now();
  const procs = {};
  const save = () => {
    out.totalMs = Date.now() - t0;
    fs.writeFileSync(`${resultFile}.tmp`, JSON.stringify(out, null, 1));
    fs.renameSync(`${resultFile}.tmp`, resultFile);
  };
  function step(name, cmd, args, { timeoutMs = 30_000, env, input, quiet } = {}) {
    const started = Date.now();
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, ...env }, input, maxBuffer: 16 << 20 });
    const rec = {
      name,
      cmd: [cmd, ...args].join(' '),
      code: r.status === null ? (r.error ? `error: ${r.error.message}` : `signal ${r.signal}`) : r.status,
      ms: Date.now() - started,
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
  /**
   * Polls fn every `every` ms until it returns a truthy value or timeoutMs passes, and records the wait.
   * Returns the milliseconds it took (0 when fn was true at once), or undefined on timeout: test with `=== undefined`.
   */
  function waitFor(what, fn, timeoutMs, every = 200) {
    const started = Date.now();
    let v;
    while (!(v = fn()) && Date.now() - started < timeoutMs) sleep(every);
    const ms = Date.now() - started;
    out.steps.push({ name: `wait ${what}`, code: v ? 0 : 'timeout', ms });
    save();
    return v ? ms : undefined;
  }
  return { out, procs, save, step, sh, dockerStep, background, waitFor };
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

module.exports = { REPO, DOCKER, IMAGE, resultFileArg, cut, tailOf, sleep, recorder, busyboxTarScript, importBusyboxArgs, dockerdArgs };
