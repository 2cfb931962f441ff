/**
 * Host access (`-o host_access=true`): the host and its containers reach each other.
 *
 * A macvlan parent cannot talk to its own children (nor an ipvlan parent in l2): Docker's drivers leave the host cut
 * off from its containers. For each network with host_access, this module gives the host one shim link on the
 * network's parent, `ulh<12 hex of the network id>` (macvlan in bridge mode, or ipvlan in the network's mode), with
 * the host's own address on the network: one per pool, allocated by the controller for this node as kind `host` (so
 * never handed to a container, never taken by the leak collector while the node lives), as a /32 (/128), so no second
 * connected route for the subnet appears on the host (that would break the host's own traffic on the parent). Through
 * the shim it routes this node's blocks of the network's pools and the addresses it borrowed outside them
 * (`<block> dev ulh… proto 202`, `hostAccessRoutes` in @underlay/core): the containers on this host. Other hosts'
 * containers keep the routes the host had.
 *
 * Level-triggered: one pass (a ReconcileRunner) makes the kernel and the controller match "this host's shims" as the
 * store (its networks with hostAccess) and the cluster view (its blocks) say, and is safe to repeat: it allocates a
 * missing host address (the same request id every time, so a repeat finds the same address), makes or repairs the
 * shim, its addresses and its routes, deletes shims of networks that are gone and releases their addresses. It runs
 * when this host's networks change, when a block or an address changes in the view, and every `reconcileMs`; after
 * an agent restart the first pass finds everything in place and changes nothing. DeleteNetwork removes the shim and
 * releases the address at once (`removeHostAccess`); the pass is the safety net after a crash.
 */
import { ReconcileRunner, logWarn, type PassResult, type RouteOps } from '@underlay/adapters';
import {
  Backoff,
  HOST_ACCESS_RT_PROTO,
  formatValue,
  hostAccessRoutes,
  hostAddressRequestId,
  hostShimName,
  isHostShimName,
  tryParseAddr,
  type ClusterEvent,
  type ClusterState,
} from '@underlay/core';

import type { ControllerClient, KeyedMutex, Log } from './context.js';
import { LinkError, type LinkOps } from './links.js';
import type { LocalStore, NetworkRecord } from './store.js';

/** The kernel's addresses and routes, as host access uses them (the adapters' RouteOps). */
export type HostAccessOps = Pick<RouteOps, 'listRoutes' | 'addRoute' | 'deleteRoute' | 'listAddresses' | 'addAddress' | 'deleteAddress'>;

export interface HostAccessDeps {
  node: string;
  /** The cluster view: its state, its changes, and when it has caught up. */
  view: { readonly state: ClusterState; onChange(l: (events: readonly ClusterEvent[], state: ClusterState, info?: { resync?: boolean }) => void): () => void; ready(): Promise<void> };
  store: LocalStore;
  lock: KeyedMutex;
  controller: Pick<ControllerClient, 'requestAddress' | 'releaseAddress'>;
  links: Pick<LinkOps, 'getLink' | 'listLinks' | 'createMacvlan' | 'createIpvlan' | 'setUp' | 'deleteLink'>;
  ops: HostAccessOps;
  /** A full pass at least this often (a shim, address or route removed by hand comes back). */
  reconcileMs: number;
  log: Log;
  observe?: (loop: string, ok: boolean) => void;
}

export interface HostAccessService {
  /** Run a pass now (this host's networks changed). */
  trigger(): void;
  stop(): Promise<void>;
}

const MIN_RETRY_MS = 200;
/** The host's address as it sits on the shim: the address alone (/32, /128), no connected route for the subnet. */
const hostCidr = (address: string): string => {
  const ip = address.split('/')[0]!;
  return `${ip}/${ip.includes(':') ? 128 : 32}`;
};
/** Events that can change a shim's routes or the host addresses. */
const RELEVANT = new Set<ClusterEvent['type']>(['BlockClaimed', 'BlockReleased', 'AddressAllocated', 'AddressReleased', 'PoolDeleted', 'PoolCreated']);

/** The host addresses this node holds in the view (kind `host`): handle → where. */
function heldHostAddresses(state: ClusterState, node: string): Map<string, { poolId: string; address: string; allocSeq: number }> {
  const out = new Map<string, { poolId: string; address: string; allocSeq: number }>();
  for (const p of state.pools.values()) {
    for (const [v, a] of p.allocs) {
      if (a.kind !== 'host' || a.node !== node) continue;
      out.set(a.handle ?? `${p.poolId}|${v}`, { poolId: p.poolId, address: formatValue(p.cidr.family, v), allocSeq: a.seq });
    }
  }
  return out;
}

const handleOf = (node: string, networkId: string, poolId: string): string => `${node}/req/${hostAddressRequestId(networkId, poolId)}`;

/**
 * DeleteNetwork's part (under the network's lock): the shim goes (its addresses and routes with it) and the host
 * addresses go back to the cluster. Never throws: what fails is logged and left to the pass.
 */
export async function removeHostAccess(
  deps: { links: Pick<LinkOps, 'deleteLink'>; controller: Pick<ControllerClient, 'releaseAddress'>; log: Log },
  rec: NetworkRecord,
): Promise<void> {
  if (!rec.hostAccess && !rec.hostAddresses?.length) return;
  const shim = hostShimName(rec.id);
  await deps.links.deleteLink(shim).catch((e: Error) => logWarn(deps.log, `host access: could not delete ${shim}: ${e.message}`));
  for (const h of rec.hostAddresses ?? []) {
    const address = h.address.split('/')[0]!;
    await deps.controller
      .releaseAddress({ poolId: h.poolId, address, allocSeq: h.allocSeq })
      .then(() => deps.log(`host access: released ${address} (network ${rec.id.slice(0, 12)})`))
      .catch((e: Error) => logWarn(deps.log, `host access: could not release ${address} of network ${rec.id.slice(0, 12)}: ${e.message}`));
  }
}

class HostAccess implements HostAccessService {
  private readonly runner: ReconcileRunner;
  private readonly retry: Backoff;
  private unsubscribe?: () => void;
  private stopped = false;
  /** Last error logged per thing (each cause once, until it changes or clears). */
  private readonly lastError = new Map<string, string>();

  constructor(private readonly d: HostAccessDeps) {
    const policy = { minMs: MIN_RETRY_MS, maxMs: Math.max(d.reconcileMs, MIN_RETRY_MS) };
    this.retry = new Backoff(policy);
    this.runner = new ReconcileRunner({
      name: 'host-access',
      resyncMs: d.reconcileMs,
      backoff: policy,
      reconcile: () => this.pass(),
      ...(d.observe ? { observe: d.observe } : {}),
      onError: (e, { retryInMs }) => logWarn(d.log, `host access: pass failed: ${(e as Error).message} (retry in ${retryInMs} ms)`),
    });
  }

  begin(): void {
    this.unsubscribe = this.d.view.onChange((events, _s, info) => {
      if (!this.anyNetwork() && !info?.resync) return;
      if (info?.resync || events.some((e) => RELEVANT.has(e.type))) this.runner.trigger();
    });
    void this.d.view.ready().then(() => {
      if (!this.stopped) this.runner.start();
    });
  }

  trigger(): void {
    this.runner.trigger();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    await this.runner.stop();
  }

  private anyNetwork(): boolean {
    for (const n of this.d.store.networks.values()) if (n.hostAccess) return true;
    return false;
  }

  private failed = false;
  private fail(key: string, msg: string): void {
    this.failed = true;
    if (this.lastError.get(key) !== msg) {
      this.lastError.set(key, msg);
      logWarn(this.d.log, `host access: ${msg} (will retry)`);
    }
  }
  private ok(key: string): void {
    if (this.lastError.delete(key)) this.d.log(`host access: ${key} is fine again`);
  }

  /** One level-triggered pass over every network of this host. */
  private async pass(): Promise<PassResult | void> {
    this.failed = false;
    const routes = new Map<string, string>(); // dst → shim
    for (const n of [...this.d.store.networks.values()]) {
      if (!n.hostAccess) continue;
      await this.d.lock.run(n.id, () => this.network(n.id, routes)).catch((e: Error) => this.fail(`network ${n.id.slice(0, 12)}`, e.message));
    }
    await this.removeStale();
    await this.syncRoutes(routes);
    if (this.failed) return { requeueAfterMs: this.retry.next() };
    this.retry.reset();
  }

  /** A network's shim, its addresses and its routes (under the network's lock). */
  private async network(id: string, routes: Map<string, string>): Promise<void> {
    const rec = this.d.store.networks.get(id);
    if (!rec?.hostAccess) return;
    const key = `network ${id.slice(0, 12)}`;
    const state = this.d.view.state;
    // 1. The host's address in each pool: the one the view shows for our handle, else asked for (same request id).
    const addresses: NonNullable<NetworkRecord['hostAddresses']> = [];
    for (const poolId of rec.poolIds) {
      const p = state.pools.get(poolId);
      const v = p?.handles.get(handleOf(this.d.node, id, poolId));
      const a = v !== undefined ? p!.allocs.get(v) : undefined;
      if (p && v !== undefined && a?.kind === 'host' && a.node === this.d.node) {
        addresses.push({ poolId, address: hostCidr(formatValue(p.cidr.family, v)), allocSeq: a.seq });
        continue;
      }
      const r = await this.d.controller.requestAddress({ poolId, address: '', options: {}, requestId: hostAddressRequestId(id, poolId), kind: 'host' });
      addresses.push({ poolId, address: hostCidr(r.address), allocSeq: r.allocSeq });
      this.d.log(`host access: network ${id.slice(0, 12)} has host address ${r.address.split('/')[0]} (pool ${poolId})`);
    }
    if (JSON.stringify(addresses) !== JSON.stringify(rec.hostAddresses ?? [])) this.d.store.putNetwork({ ...rec, hostAddresses: addresses });
    // 2. The shim on the parent, of the right kind, up.
    const shim = hostShimName(id);
    const parent = await this.d.links.getLink(rec.parent);
    if (!parent) throw new LinkError(`the parent ${rec.parent} of network ${id.slice(0, 12)} is not on this host: no shim ${shim}`);
    const kind = rec.type === 'macvlan' ? 'macvlan' : 'ipvlan';
    let link = await this.d.links.getLink(shim);
    if (link && (link.parentIndex !== parent.index || (link.kind !== undefined && link.kind !== kind))) {
      this.d.log(`host access: ${shim} is not a ${kind} link of ${rec.parent}: re-created`);
      await this.d.links.deleteLink(shim);
      link = undefined;
    }
    if (!link) {
      try {
        if (kind === 'macvlan') await this.d.links.createMacvlan({ name: shim, parent: rec.parent, mode: 'bridge', up: true });
        else await this.d.links.createIpvlan({ name: shim, parent: rec.parent, mode: rec.ipvlanMode as 'l2', flag: 'bridge', up: true });
      } catch (e) {
        throw new LinkError(`failed to create the host's ${kind} shim ${shim} on ${rec.parent}: ${(e as Error).message}`, { cause: e });
      }
      this.d.log(`host access: created ${shim} (${kind} on ${rec.parent}) for network ${id.slice(0, 12)}`);
    }
    await this.d.links.setUp(shim);
    // 3. Exactly the host addresses on it (the kernel's IPv6 link-local address stays).
    const want = new Set(addresses.map((a) => a.address));
    const have = await this.d.ops.listAddresses(shim);
    const haveSet = new Set(have.map((a) => `${a.address}/${a.prefixLen}`));
    for (const a of have) {
      const c = `${a.address}/${a.prefixLen}`;
      if (want.has(c) || (a.family === 6 && a.address.toLowerCase().startsWith('fe80:'))) continue;
      await this.d.ops.deleteAddress({ dev: shim, cidr: c });
      this.d.log(`host access: removed ${c} from ${shim}`);
    }
    for (const c of want) {
      if (haveSet.has(canonical(c))) continue;
      await this.d.ops.addAddress({ dev: shim, cidr: c });
      this.d.log(`host access: ${shim} has ${c}`);
    }
    // 4. Its routes: this node's blocks and borrowed addresses.
    for (const dst of hostAccessRoutes(state, this.d.node, rec.poolIds)) if (!routes.has(dst)) routes.set(dst, shim);
    this.ok(key);
  }

  /** Shims of networks that are gone, and host addresses no network of this host has any more. */
  private async removeStale(): Promise<void> {
    const networks = this.d.store.networks;
    try {
      for (const l of await this.d.links.listLinks()) {
        if (!isHostShimName(l.name)) continue;
        const owner = [...networks.values()].find((n) => n.hostAccess && hostShimName(n.id) === l.name);
        if (owner) continue;
        await this.d.links.deleteLink(l.name);
        this.d.log(`host access: deleted ${l.name}, whose network is gone`);
      }
      this.ok('stale shims');
    } catch (e) {
      this.fail('stale shims', `cannot remove stale shims: ${(e as Error).message}`);
    }
    const wanted = new Set<string>();
    for (const n of networks.values()) if (n.hostAccess) for (const poolId of n.poolIds) wanted.add(handleOf(this.d.node, n.id, poolId));
    for (const [handle, h] of heldHostAddresses(this.d.view.state, this.d.node)) {
      if (wanted.has(handle)) continue;
      // A network being created has its record before its pass: only release what no record of ours names.
      const named = [...networks.values()].some((n) => n.hostAddresses?.some((x) => x.poolId === h.poolId && x.address.split('/')[0] === h.address));
      if (named) continue;
      try {
        await this.d.controller.releaseAddress({ poolId: h.poolId, address: h.address, allocSeq: h.allocSeq });
        this.d.log(`host access: released ${h.address} (pool ${h.poolId}), whose network is gone from this host`);
        this.ok(`release ${h.address}`);
      } catch (e) {
        this.fail(`release ${h.address}`, `cannot release host address ${h.address}: ${(e as Error).message}`);
      }
    }
  }

  /** The kernel's proto-202 routes equal to `want` (dst → shim): stale ones deleted, missing ones added. */
  private async syncRoutes(want: Map<string, string>): Promise<void> {
    let current: Map<string, string>;
    try {
      current = new Map((await this.d.ops.listRoutes({ protocol: HOST_ACCESS_RT_PROTO })).map((r) => [r.dst, r.dev ?? '']));
    } catch (e) {
      this.fail('listing routes', `cannot list the kernel's routes: ${(e as Error).message}`);
      return;
    }
    for (const [dst, dev] of current) {
      if (want.get(dst) === dev) continue;
      try {
        await this.d.ops.deleteRoute({ dst, protocol: HOST_ACCESS_RT_PROTO, ...(dev ? { dev } : {}) });
        current.delete(dst);
        this.d.log(`host access: deleted route ${dst} dev ${dev}`);
      } catch (e) {
        this.fail(`delete ${dst}`, `cannot delete route ${dst} dev ${dev}: ${(e as Error).message}`);
      }
    }
    for (const [dst, dev] of want) {
      if (current.get(dst) === dev) continue;
      const key = `route ${dst}`;
      try {
        await this.d.ops.addRoute({ dst, dev, protocol: HOST_ACCESS_RT_PROTO });
        this.d.log(`host access: added route ${dst} dev ${dev}`);
        this.ok(key);
      } catch (e) {
        const errno = (e as { errno?: string }).errno;
        this.fail(key, errno === 'EEXIST' ? `cannot add route ${dst} dev ${dev}: a route to ${dst} with another protocol is in the way` : `cannot add route ${dst} dev ${dev}: ${(e as Error).message}`);
      }
    }
  }
}

/** `2001:DB8::1/128` as the kernel lists it. */
function canonical(cidr: string): string {
  const [ip, len] = cidr.split('/') as [string, string];
  const a = tryParseAddr(ip);
  return a ? `${formatValue(a.family, a.value)}/${len}` : cidr;
}

/** Starts host access for this host (passes begin once the view has caught up). */
export function startHostAccess(deps: HostAccessDeps): HostAccessService {
  const s = new HostAccess(deps);
  s.begin();
  return s;
}

