// What the e2e lab needs on the machine (root, Linux, and the tools of each
// feature): `checkPrerequisites` lists what is missing, `assertPrerequisites`
// fails with one clear message. The e2e suite fails, never skips, without them.
import * as fs from 'node:fs';
import { which } from './run';

export type Feature = 'lab' | 'docker' | 'etcd' | 'nats';

const TOOLS: Record<Feature, string[]> = {
  lab: ['ip', 'nsenter', 'unshare', 'mount', 'umount', 'flock', 'busybox'],
  docker: ['dockerd', 'containerd', 'containerd-shim-runc-v2', 'runc', 'docker'],
  etcd: ['etcd'],
  nats: ['nats-server'],
};

/** Lists what is missing for the given features (empty when all is there). */
export function checkPrerequisites(features: readonly Feature[] = ['lab', 'docker', 'etcd', 'nats']): string[] {
  const problems: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    problems.push(`must run as root (uid 0), running as uid ${process.getuid()}`);
  }
  if (process.platform !== 'linux') problems.push(`needs Linux, running on ${process.platform}`);
  for (const f of features) {
    for (const tool of TOOLS[f]) {
      if (!which(tool)) problems.push(`missing executable '${tool}' (needed for ${f})`);
    }
  }
  if (features.includes('lab') && !fs.existsSync('/proc/self/ns/net')) problems.push('no network namespace support (/proc/self/ns/net)');
  if (features.includes('docker') && !fs.existsSync('/sys/fs/cgroup')) problems.push('no cgroup filesystem at /sys/fs/cgroup');
  return problems;
}

/** Throws one clear error listing everything missing. The e2e suite must fail, not skip, without its tools. */
export function assertPrerequisites(features?: readonly Feature[]): void {
  const problems = checkPrerequisites(features);
  if (problems.length > 0) {
    throw new Error(
      `underlay e2e lab prerequisites not met:\n  - ${problems.join('\n  - ')}\n` +
        'The e2e suite needs root plus iproute2, util-linux, busybox-static, docker.io (dockerd 20.10, containerd, runc), etcd-server and nats-server.',
    );
  }
}
