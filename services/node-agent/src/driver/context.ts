import type { DockerEngine, RpcClient } from '@underlay/adapters';
import type { LinkOps } from './links.js';
import type { LocalStore } from './store.js';

/** Serialises work per key (a network id), so concurrent calls from Docker cannot interleave badly. */
export class KeyedMutex {
  private tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}

export interface DriverContext {
  node: string;
  store: LocalStore;
  links: LinkOps;
  controller: RpcClient;
  lock: KeyedMutex;
  log: (msg: string) => void;
  docker: DockerEngine;
  /** The pool this node's Docker requested last for each CIDR: CreateNetwork names only the CIDR, right after RequestPool. */
  recentPools: Map<string, string>;
  /** Cluster parent names → this host's interfaces (--parent-map). */
  parentMap?: Readonly<Record<string, string>>;
  /** The last error of each endpoint's Docker calls, for status reports (kept a while after the endpoint is gone). */
  endpointErrors?: Map<string, { networkId: string; error: string; atMs: number }>;
  /** Docker networks the controller refused (same name, other definition): id → why. */
  conflicts?: Map<string, string>;
  /** The replica reconcile waits until the cluster view has reached this seq (a removal this agent caused). */
  awaitSeq?: number;
  /** Called after this host's networks changed (a replica reconcile, routes). */
  onNetworksChanged?: () => void;
}
