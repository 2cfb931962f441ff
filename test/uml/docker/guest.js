#!/usr/bin/env node
// Runs INSIDE a user-mode-linux guest (test/uml/uml.ts): a real dockerd 20.10 plus `underlay up`
// (etcd + nats + controller + agent, serving /run/docker/plugins/underlay.sock), then ipvlan
// networks through the plugin and containers on them. ipvlan exists only in the guest kernel.
//
//   node test/uml/docker/guest.js RESULT_FILE [l2] [l3]
//
// Everything the guest writes lives on guest-only tmpfs mounts (/run, and tmpfs over /etc/docker,
// /opt, /var/lib/docker, /var/lib/containerd): the guest's root is the host's / through hostfs.
// Every step is recorded ({ name, cmd, code, ms, stdout, stderr }) and RESULT_FILE is rewritten
// after each step, so a hang or crash still leaves what happened so far.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { REPO, IMAGE, resultFileArg, tailOf, guestBudgets, recorder, busyboxTarScript, importBusyboxArgs, dockerdArgs } = require('../guest-common');

const resultFile = resultFileArg('guest.js RESULT_FILE [l2] [l3]');
const MODES = process.argv.slice(3).length ? process.argv.slice(3) : ['l2', 'l3'];
const DK = '/run/dk';
const SOCK = `${DK}/docker.sock`;
const PLUGIN_DIR = '/run/docker/plugins';
const PLUGIN_SOCK = `${PLUGIN_DIR}/underlay.sock`;

const out = {
  uname: '',
  node: process.version,
  modes: MODES,
  steps: [],
  setup: { ok: false },
  networks: {},
  dockerdLogTail: '',
  underlayLogTail: '',
  totalMs: 0,
};
// Calibrates this machine first (a second): every step below runs within its budget (test/uml/budgets.json).
const budgets = guestBudgets('uml-docker');
out.budgets = budgets.info;
const { save, step, sh, dockerStep, background, waitFor, procs } = recorder(resultFile, out, budgets);
/** Whether a process we started still runs (not a zombie). */
function alive(pid) {
  try {
    process.kill(pid, 0);
    return !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
const dockerEnv = { DOCKER_HOST: `unix://${SOCK}`, DOCKER_CONFIG: `${DK}/cli`, DOCKER_API_VERSION: '1.41' };
const docker = (name, args, o) => dockerStep(dockerEnv, name, args, o);

function setup() {
  out.uname = spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout.trim();
  // Guest-only mounts. cgroup v2 (dockerd 20.10 + runc support it; cgroupfs driver).
  const mounts = sh(
    'mounts',
    `set -e
mkdir -p ${DK}/cli ${DK}/data ${DK}/exec ${PLUGIN_DIR} /run/underlay
mount -t cgroup2 none /sys/fs/cgroup
echo "+cpu +memory +pids +io" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
cat /sys/fs/cgroup/cgroup.controllers
# dockerd 20.10 writes /etc/docker/key.json; containerd's opt plugin creates /opt/containerd.
mount -t tmpfs -o mode=0755 tmpfs /etc/docker
mount -t tmpfs -o mode=0755 tmpfs /opt
for d in /var/lib/docker /var/lib/containerd; do [ -d $d ] && mount -t tmpfs tmpfs $d || true; done
mountpoint -q /dev/pts || { mkdir -p /dev/pts; mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts || true; }
mountpoint -q /dev/shm || mount -t tmpfs tmpfs /dev/shm || true
echo '{}' > ${DK}/daemon.json
mount | grep -E 'cgroup|tmpfs|devpts' || true`,
  );
  if (mounts.code !== 0) return false;
  // The parent interface for the networks: a veth pair, both ends up.
  const link = sh('parent eth1', 'set -e\nip link add eth1 type veth peer name eth1p\nip link set eth1 up\nip link set eth1p up\nip -d link show eth1');
  if (link.code !== 0) return false;

  // A busybox image: /bin/busybox + one symlink per applet.
  const bb = sh('busybox rootfs tar', `${busyboxTarScript(DK)}\nls -l ${DK}/busybox.tar`);
  if (bb.code !== 0) return false;

  const dockerd = background(
    'dockerd',
    '/usr/sbin/dockerd',
    [
      ...dockerdArgs(DK),
      '--shutdown-timeout=3',
      ...(process.env.UML_DOCKERD_DEBUG === '1' ? ['--debug'] : []),
    ],
    `${DK}/dockerd.log`,
  );
  out.dockerdPid = dockerd.pid;
  const dockerdUp = () => docker('docker version', ['version', '--format', '{{.Server.Version}}'], { budget: 'docker version' }).code === 0;
  const up = waitFor('dockerd /_ping', dockerdUp, 'dockerd start', 200, () => (alive(dockerd.pid) ? undefined : 'dockerd exited'));
  // Keep only the last `docker version` attempt in the record.
  const versions = out.steps.filter((s) => s.name === 'docker version');
  out.steps = out.steps.filter((s) => s.name !== 'docker version' || s === versions[versions.length - 1]);
  out.steps.push({ name: 'docker version attempts', code: 0, count: versions.length });
  out.dockerdLogTail = tailOf(`${DK}/dockerd.log`);
  save();
  if (up === undefined) return false;

  background(
    'underlay up',
    process.execPath,
    [
      // UML_UNDERLAY_CLI: another checkout's CLI (e.g. to compare with an older build).
      process.env.UML_UNDERLAY_CLI || path.join(REPO, 'cli/bin/underlay.js'),
      'up',
      '--state-dir', '/run/underlay',
      '--plugin-dir', PLUGIN_DIR,
      '--node', 'uml1',
      '--etcd-port', '23790',
      '--nats-port', '24222',
      '--listen', '127.0.0.1:27070',
      '--docker', `unix://${SOCK}`,
    ],
    '/run/underlay.log',
  );
  const plugin = waitFor('plugin socket', () => fs.existsSync(PLUGIN_SOCK), 'underlay up start', 200, () => (alive(procs['underlay up']) ? undefined : 'underlay up exited'));
  out.underlayLogTail = tailOf('/run/underlay.log');
  save();
  if (plugin === undefined) return false;
  const imp = docker('docker import busybox', importBusyboxArgs(DK));
  return imp.code === 0;
}

function network(mode, name, subnet) {
  const n = { mode, name, subnet, created: false, containers: {}, ping: {}, removed: false, errors: [] };
  out.networks[mode] = n;
  const fail = (what, r) => {
    n.errors.push(`${what}: exit ${r.code}: ${r.stderr || r.stdout}`);
    save();
  };
  const c = docker(`[${mode}] network create`, ['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', subnet, '-o', 'parent=eth1', '-o', `ipvlan_mode=${mode}`, name], {
    budget: 'network create',
  });
  n.created = c.code === 0;
  if (!n.created) fail('network create', c);
  else {
    const insp = docker(`[${mode}] network inspect`, ['network', 'inspect', name], { budget: 'network inspect' });
    try {
      n.inspect = JSON.parse(insp.stdout)[0];
    } catch {
      /* recorded in steps */
    }
    const names = [`${name}-a`, `${name}-b`];
    for (const cn of names) {
      const r = docker(`[${mode}] run ${cn}`, ['run', '-d', '--name', cn, '--network', name, IMAGE, 'sleep', '600'], { budget: 'docker run' });
      const ci = { started: r.code === 0, ip: undefined, error: r.code === 0 ? undefined : r.stderr || r.stdout };
      if (r.code !== 0) fail(`docker run ${cn}`, r);
      else {
        const ip = docker(`[${mode}] ip of ${cn}`, ['inspect', '--format', `{{(index .NetworkSettings.Networks "${name}").IPAddress}}`, cn], { budget: 'docker inspect' });
        ci.ip = ip.stdout.trim() || undefined;
        // busybox ip has no -d: look at the container's netns with the guest's (host's) iproute2.
        const pid = docker(`[${mode}] pid of ${cn}`, ['inspect', '--format', '{{.State.Pid}}', cn], { budget: 'docker inspect' }).stdout.trim();
        const links = step(`[${mode}] links in ${cn}`, 'nsenter', ['-t', pid, '-n', 'ip', '-d', 'addr', 'show', 'eth0'], { budget: 'ip' });
        ci.links = links.stdout || links.stderr;
      }
      n.containers[cn] = ci;
      save();
    }
    const [a, b] = names.map((cn) => n.containers[cn]);
    if (a.ip && b.ip) {
      for (const [from, to] of [
        [names[0], b.ip],
        [names[1], a.ip],
      ]) {
        const p = docker(`[${mode}] ping ${from} -> ${to}`, ['exec', from, 'ping', '-c', '2', '-W', '2', to], { budget: 'docker exec ping' });
        n.ping[`${from}->${to}`] = { ok: p.code === 0, output: p.stdout || p.stderr };
      }
    }
    const rm = docker(`[${mode}] rm -f containers`, ['rm', '-f', ...names], { budget: 'docker rm' });
    n.containersRemoved = rm.code === 0;
  }
  // Remove the network (also after a failed run, so `network rm` is recorded either way).
  if (n.created) {
    const rm = docker(`[${mode}] network rm`, ['network', 'rm', name], { budget: 'network rm' });
    n.removed = rm.code === 0;
    if (!n.removed) fail('network rm', rm);
  }
  n.linksAfter = step(`[${mode}] guest links after`, 'ip', ['-br', 'link'], { budget: 'ip' }).stdout;
  save();
}

/** The guest's own address on eth1 for the host access runs, in their subnet (off the containers' --ip-range). */
const HA_HOST = '203.0.113.1';
const HA_SUBNET = ['--subnet', '203.0.113.0/24', '--ip-range', '203.0.113.128/25', '--gateway', '203.0.113.254'];

/**
 * Host access (`-o host_access=true`) on ipvlan `mode`: one container; the host (the guest's root namespace, with
 * HA_HOST on eth1) pings it, and it pings the host (the shim's address with the option, HA_HOST without).
 */
function hostAccess(mode, on) {
  const key = `${mode}-${on ? 'on' : 'off'}`;
  const name = `ha-${key}`;
  const h = { mode, on, created: false, errors: [], ping: {} };
  (out.hostAccess = out.hostAccess || {})[key] = h;
  const fail = (what, r) => {
    h.errors.push(`${what}: exit ${r.code}: ${r.stderr || r.stdout}`);
    save();
  };
  const opts = ['-o', 'parent=eth1', '-o', `ipvlan_mode=${mode}`, ...(on ? ['-o', 'host_access=true'] : [])];
  const c = docker(`[${name}] network create`, ['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', ...HA_SUBNET, ...opts, name], { budget: 'network create' });
  h.created = c.code === 0;
  if (!h.created) return fail('network create', c);
  const id = docker(`[${name}] network id`, ['network', 'inspect', '-f', '{{.Id}}', name], { budget: 'network inspect' }).stdout.trim();
  h.shim = `ulh${id.slice(0, 12)}`;
  const cn = `${name}-c`;
  const r = docker(`[${name}] run ${cn}`, ['run', '-d', '--name', cn, '--network', name, IMAGE, 'sleep', '600'], { budget: 'docker run' });
  if (r.code !== 0) fail(`docker run ${cn}`, r);
  else {
    h.ip = docker(`[${name}] ip of ${cn}`, ['inspect', '--format', `{{(index .NetworkSettings.Networks "${name}").IPAddress}}`, cn], { budget: 'docker inspect' }).stdout.trim();
    if (on) {
      // The agent makes the shim and its /32 right after the network (its pass): wait for them.
      const shimAddr = () => {
        const a = step(`[${name}] shim address`, 'ip', ['-o', '-4', 'addr', 'show', 'dev', h.shim], { budget: 'ip', quiet: true });
        const m = /inet (\S+)/.exec(a.stdout);
        return m ? m[1] : undefined;
      };
      waitFor(`[${name}] shim ${h.shim} with its address`, shimAddr, 'network create', 100);
      h.shimAddress = shimAddr();
      h.shimLink = step(`[${name}] shim link`, 'ip', ['-d', 'link', 'show', h.shim], { budget: 'ip' }).stdout;
      // Its block's route through the shim (proto 202).
      waitFor(`[${name}] route through ${h.shim}`, () => step(`[${name}] routes 202`, 'ip', ['-4', 'route', 'show', 'proto', '202'], { budget: 'ip', quiet: true }).stdout.includes(h.shim) || undefined, 'network create', 100);
      h.routes = step(`[${name}] routes`, 'ip', ['-4', 'route'], { budget: 'ip' }).stdout;
    }
    const target = on && h.shimAddress ? h.shimAddress.split('/')[0] : HA_HOST;
    if (h.ip) {
      const hp = step(`[${name}] host ping ${h.ip}`, 'busybox', ['ping', '-c', '1', '-W', '2', h.ip], { budget: 'docker exec ping' });
      h.ping.host = { ok: hp.code === 0, ran: /packets transmitted/.test(hp.stdout), output: hp.stdout || hp.stderr };
      const cp = docker(`[${name}] ping ${cn} -> ${target}`, ['exec', cn, 'ping', '-c', '1', '-W', '2', target], { budget: 'docker exec ping' });
      h.ping.container = { ok: cp.code === 0, ran: /packets transmitted/.test(cp.stdout), output: cp.stdout || cp.stderr, target };
    }
    docker(`[${name}] rm -f ${cn}`, ['rm', '-f', cn], { budget: 'docker rm' });
  }
  const rm = docker(`[${name}] network rm`, ['network', 'rm', name], { budget: 'network rm' });
  h.removed = rm.code === 0;
  if (!h.removed) fail('network rm', rm);
  h.linksAfter = step(`[${name}] guest links after`, 'ip', ['-br', 'link'], { budget: 'ip' }).stdout;
  h.routesAfter = step(`[${name}] routes 202 after`, 'ip', ['-4', 'route', 'show', 'proto', '202'], { budget: 'ip' }).stdout;
  save();
}

try {
  if (budgets.tooSlow) throw new Error(budgets.tooSlow);
  out.setup.ok = setup();
  if (out.setup.ok) {
    const subnets = { l2: '192.0.2.0/24', l3: '198.51.100.0/24', l3s: '203.0.113.0/24' };
    for (const mode of MODES) network(mode, `n-${mode}`, subnets[mode] || '192.0.2.0/24');
    // Host access: the guest's root namespace is the host, with an address of its own on the parent.
    sh('host address on eth1', `ip addr add ${HA_HOST}/24 dev eth1`, { budget: 'ip' });
    for (const mode of MODES) for (const on of [false, true]) hostAccess(mode, on);
  }
} catch (e) {
  out.error = e && e.stack ? e.stack : String(e);
} finally {
  out.dockerdLogTail = tailOf(`${DK}/dockerd.log`, 80);
  out.underlayLogTail = tailOf('/run/underlay.log', 60);
  save();
}
// Stop dockerd quickly (the guest powers off afterwards anyway; this keeps shutdown short).
if (out.dockerdPid) {
  try {
    process.kill(out.dockerdPid, 'SIGTERM');
  } catch {
    /* gone */
  }
}
process.exit(0);
