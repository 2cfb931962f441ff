// Reusable end-to-end lab: simulated hosts (network namespaces on a bridge),
// one dockerd per host, etcd and NATS. See README.md in this directory.
import * as path from 'node:path';
import type { Lab, LabHost, LabOptions } from './netlab';
import { createLab } from './netlab';
import { assertPrerequisites, type Feature } from './prerequisites';
import type { EtcdService, NatsOptions, NatsService, ServiceOptions } from './services';
import { startEtcd, startNats } from './services';
import type { ClusterOptions, EtcdCluster, NatsCluster, NatsClusterOptions } from './clusters';
import { startEtcdCluster, startNatsCluster } from './clusters';
import { labBudgetMs } from './budget';

export * from './procfs';
export * from './kill';
export * from './run';
export * from './spawn';
export * from './wait';
export * from './probes';
export * from './cgroups';
export * from './services';
export * from './clusters';
export * from './netlab';
export * from './prerequisites';
export * from './netns';
export * from './lab-state';
export * from './sweep';
export * from './dockerd';
export * from './nats-auth';

/** Starts etcd bound to the lab bridge (reachable from every host); stopped by lab.destroy(). */
export async function startLabEtcd(lab: Lab, opts: Partial<ServiceOptions> = {}): Promise<EtcdService> {
  const svc = await startEtcd({ dir: path.join(lab.dir, 'services'), host: lab.bridgeAddress, ...opts });
  lab.onDestroy(svc.name, svc.stop);
  return svc;
}

/** Starts nats-server (JetStream) bound to the lab bridge; stopped by lab.destroy(). */
export async function startLabNats(lab: Lab, opts: Partial<NatsOptions> = {}): Promise<NatsService> {
  const svc = await startNats({ dir: path.join(lab.dir, 'services'), host: lab.bridgeAddress, ...opts });
  lab.onDestroy(svc.name, svc.stop);
  return svc;
}

/** Starts a three-member etcd cluster (by default) with clients on the lab bridge; stopped by lab.destroy(). */
export async function startLabEtcdCluster(lab: Lab, opts: Partial<ClusterOptions> = {}): Promise<EtcdCluster> {
  const c = await startEtcdCluster({ dir: path.join(lab.dir, 'services'), host: lab.bridgeAddress, ...opts });
  lab.onDestroy(c.name, c.stop);
  return c;
}

/** Starts a three-node NATS cluster (by default) with JetStream, clients on the lab bridge; stopped by lab.destroy(). */
export async function startLabNatsCluster(lab: Lab, opts: Partial<NatsClusterOptions> = {}): Promise<NatsCluster> {
  const c = await startNatsCluster({ dir: path.join(lab.dir, 'services'), host: lab.bridgeAddress, ...opts });
  lab.onDestroy(c.name, c.stop);
  return c;
}

export interface WithLabOptions extends LabOptions {
  /** Hosts to add in beforeAll, in order (addresses 198.51.100.1, .2, ...). */
  hosts?: string[];
  /** Tools checked up front; default all. A missing tool fails the suite with a clear message. */
  features?: Feature[];
  /** beforeAll timeout (default 300 s: it includes waiting for another process's lab to finish). */
  setupTimeoutMs?: number;
  /** afterAll timeout (default: the budget of 'lab teardown', test/lab/budget.ts). */
  teardownTimeoutMs?: number;
}

export interface LabContext {
  /** The lab; throws if beforeAll has not (successfully) created it. */
  readonly lab: Lab;
  /** Host by name. */
  host(name: string): LabHost;
}

/**
 * Call at the top of a describe block (or file): creates the lab in beforeAll
 * and destroys it in afterAll, whatever happened in between. Tests may call
 * `ctx.lab.destroy()` themselves; the afterAll call is then a no-op.
 */
export function withLab(opts: WithLabOptions = {}): LabContext {
  let lab: Lab | undefined;
  let pending: Promise<Lab> | undefined;
  let setupError: unknown;
  const setupTimeoutMs = opts.setupTimeoutMs ?? 300_000;
  beforeAll(async () => {
    try {
      assertPrerequisites(opts.features ?? ['lab', 'docker', 'etcd', 'nats']);
      pending = createLab({ lockTimeoutMs: Math.max(5_000, setupTimeoutMs - 30_000), ...opts });
      lab = await pending;
      for (const h of opts.hosts ?? []) await lab.addHost(h);
    } catch (e) {
      setupError = e;
      throw e;
    }
  }, setupTimeoutMs);
  afterAll(async () => {
    // If jest gave up on beforeAll while createLab was still running, wait for it so nothing leaks.
    if (!lab && pending) lab = await pending.catch(() => undefined);
    if (lab) await lab.destroy();
  }, opts.teardownTimeoutMs ?? labBudgetMs('lab teardown'));
  const ctx: LabContext = {
    get lab(): Lab {
      if (!lab) {
        const why = setupError ? `: ${(setupError as Error).message ?? String(setupError)}` : ' (beforeAll has not run yet)';
        throw new Error(`lab is not available${why}`);
      }
      return lab;
    },
    host: (name) => ctx.lab.host(name),
  };
  return ctx;
}
export * from './image';
