/** NetworkDriver.CreateNetwork / DeleteNetwork (libnetwork: macvlan_network.go). */
import {
  ConflictError,
  REPLICA_LABEL,
  definitionFromDocker,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  UnderlayError,
  parseNetworkOptions,
  plugin,
  type DockerNetworkInspect,
  type NetworkOptions,
} from '@underlay/core';
import { retry, sleep, logWarn } from '@underlay/adapters';
import type { DefineDeps, NetworkDeps } from './context.js';
import { mapParent } from '../config.js';
import { ensureParent, removeCreatedParent } from './links.js';
import { removeHostAccess } from './host-access.js';
import type { NetworkRecord } from './store.js';
import { networkLabel, networkNotFoundText } from './network-names.js';

const OUR_SPACES = new Set([plugin.LOCAL_ADDRESS_SPACE, plugin.GLOBAL_ADDRESS_SPACE]);

function stringMap(v: unknown): Record<string, string> {
  if (!v || typeof v !== 'object') return {};
  return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, String(x)]));
}

const truthy = (v: unknown) => v === true || v === 'true';

/** defineLater: first look 50 ms after CreateNetwork, then every 200 ms, 50 looks in all (about 10 s). */
const DEFINE_FIRST_MS = 50;
const DEFINE_RETRY = { minMs: 200, maxMs: 200, jitter: 0 } as const;
const DEFINE_ATTEMPTS = 50;

/** Refuses a network whose addresses would come from a host-local IPAM. */
function requireUnderlayIpam(req: plugin.CreateNetworkRequest): void {
  const data = [...(req.IPv4Data ?? []), ...(req.IPv6Data ?? [])];
  const foreign = data.find((d) => !OUR_SPACES.has(d.AddressSpace));
  if (!foreign) return;
  const subnet = req.IPv4Data?.[0]?.Pool ?? '192.0.2.0/24';
  throw new InvalidArgumentError(
    `this network takes its addresses from another IPAM driver (address space "${foreign.AddressSpace}"), which allocates on each host alone, ` +
      `so the same address would be handed out on several hosts. Create it with the underlay IPAM driver instead: ` +
      `docker network create -d underlay --ipam-driver underlay --subnet ${subnet} -o parent=IFACE NAME`,
  );
}

/**
 * Parent rules: macvlan and ipvlan never share a parent; one ipvlan network per parent; passthru takes
 * the parent alone. Refusals name the other network by its name and short id (libnetwork names it by id only).
 */
async function checkParentRules(ctx: NetworkDeps, id: string, o: NetworkOptions, parent: string): Promise<void> {
  for (const other of ctx.store.networks.values()) {
    if (other.id === id || other.parent !== parent) continue;
    const name = await networkLabel(ctx, other.id);
    if (other.type !== o.type) {
      throw new ConflictError(`${other.type} network ${name} is already using parent interface ${parent}: macvlan and ipvlan cannot share a parent`);
    }
    if (o.type === 'ipvlan') throw new ConflictError(`network ${name} is already using parent interface ${parent}`);
    if (o.macvlanMode === 'passthru') throw new ConflictError(`cannot use mode passthru, macvlan network ${name} is already using parent interface ${parent}`);
    if (other.macvlanMode === 'passthru') throw new ConflictError(`macvlan network ${name} is already using parent interface ${parent} in mode passthru`);
  }
}

/** The network's gateway: none for a point-to-point subnet whose gateway the controller reserved for nobody (no --gateway). */
function gatewayOf(ctx: NetworkDeps, d: { Pool: string; Gateway?: string }): string | undefined {
  const poolId = ctx.memory.recentPools.get(d.Pool);
  const ip = (cidr: string | undefined) => cidr?.split('/')[0];
  if (d.Gateway && poolId && ip(ctx.memory.unreservedGateways.get(poolId)) === ip(d.Gateway)) return undefined;
  return d.Gateway;
}

export async function createNetwork(ctx: NetworkDeps, raw: unknown): Promise<Record<string, never>> {
  const req = plugin.CreateNetworkRequest.parse(raw);
  const id = req.NetworkID;
  return ctx.lock.run(id, async () => {
    const v4 = req.IPv4Data ?? [];
    const v6 = req.IPv6Data ?? [];
    if (v4.length === 0 || v4.every((d) => d.Pool === '0.0.0.0/0')) throw new InvalidArgumentError('ipv4 pool is empty');
    requireUnderlayIpam(req);
    const opts = req.Options ?? {};
    const parsed = parseNetworkOptions(stringMap(opts[plugin.netlabel.generic]), {
      internal: truthy(opts[plugin.netlabel.internal]),
      ipv6: truthy(opts[plugin.netlabel.enableIPv6]),
    });
    // The definition names the cluster's parent; this host may call it otherwise (--parent-map).
    const o: NetworkOptions = parsed.parent ? { ...parsed, parent: mapParent(ctx.parentMap ?? {}, parsed.parent) } : parsed;
    const existing = ctx.store.networks.get(id);
    if (existing) return {}; // Docker re-creating a network we restored.
    const wanted = o.parent ?? undefined;
    if (wanted) await checkParentRules(ctx, id, o, wanted);
    const { parent, created } = await ensureParent(ctx.links, id, o);
    // A parent another network of ours created counts as created for this one too (deleted by the last user).
    const sharedCreated = [...ctx.store.networks.values()].some((n) => n.parent === parent && n.createdParent);
    const rec: NetworkRecord = {
      id,
      type: o.type,
      requestedParent: o.parent,
      parent,
      createdParent: created || sharedCreated,
      macvlanMode: o.macvlanMode,
      ipvlanMode: o.ipvlanMode,
      ipvlanFlag: o.ipvlanFlag,
      internal: o.internal || !o.parent,
      ipv4: v4.map((d) => ({ pool: d.Pool, gateway: gatewayOf(ctx, d) })),
      ipv6: v6.map((d) => ({ pool: d.Pool, gateway: gatewayOf(ctx, d) })),
      poolIds: [],
      ...(o.hostAccess ? { hostAccess: true } : {}),
    };
    const poolIds = [...v4, ...v6].map((d) => ctx.memory.recentPools.get(d.Pool)).filter((x): x is string => !!x);
    await ctx.controller.networkRecord({ networkId: id, poolIds, options: stringMap(opts[plugin.netlabel.generic]) });
    ctx.store.putNetwork({ ...rec, poolIds });
    ctx.onNetworksChanged?.();
    ctx.log(`network ${id.slice(0, 12)} created: ${o.type} on ${parent}${created ? ' (created by underlay)' : ''}`);
    void defineLater(ctx, id);
    return {};
  });
}

/**
 * Docker stores the network (with its name) only after CreateNetwork returns: a little later, read
 * its name and definition and tell the controller, which makes it the cluster network of that name,
 * a member of it, or refuses it (then the replica reconcile removes it here).
 */
async function defineLater(ctx: NetworkDeps, id: string): Promise<void> {
  await sleep(DEFINE_FIRST_MS);
  await retry(
    async () => {
      if (!ctx.store.networks.has(id)) return; // deleted meanwhile
      let n: DockerNetworkInspect | undefined;
      try {
        n = await ctx.docker.inspectNetwork(id);
        if (n) await defineNetwork(ctx, n);
      } catch (e) {
        logWarn(ctx.log, `could not define network ${id.slice(0, 12)} for the cluster: ${(e as Error).message}`);
        throw e;
      }
      if (!n) throw new UnavailableError(`Docker does not show network ${id.slice(0, 12)} yet`);
    },
    { backoff: DEFINE_RETRY, retryIf: (_e, attempt) => attempt < DEFINE_ATTEMPTS },
  ).catch(() => {});
}

/** Sends the network's name and definition; returns the controller's verdict. */
export async function defineNetwork(ctx: DefineDeps, n: DockerNetworkInspect): Promise<{ member: boolean; conflict?: string }> {
  const replica = !!n.Labels?.[REPLICA_LABEL];
  // The replica reconcile acts on this network only with a view that has read the cluster chain as far as the answer.
  const r = await ctx.memory.define(n.Id, () => ctx.controller.networkName({ networkId: n.Id, name: n.Name, definition: definitionFromDocker(n), replica }));
  if (r.conflict) {
    ctx.memory.conflicts.set(n.Id, r.conflict);
    logWarn(ctx.log, `network ${n.Name} (${n.Id.slice(0, 12)}) refused: ${r.conflict}; it will be removed from this host`);
  } else {
    ctx.memory.conflicts.delete(n.Id);
  }
  return r;
}

export async function deleteNetwork(ctx: NetworkDeps, raw: unknown): Promise<Record<string, never>> {
  const { NetworkID: id } = plugin.NetworkIdRequest.parse(raw);
  return ctx.lock.run(id, async () => {
    const rec = ctx.store.networks.get(id);
    if (!rec) throw new NotFoundError(await networkNotFoundText(ctx, id));
    // Addresses held for a restart on this network go back now: no container comes back to a network that goes.
    for (const poolId of rec.poolIds) {
      await ctx.holds?.releasePool(poolId).catch((e: Error) => logWarn(ctx.log, `held addresses of pool ${poolId} not released: ${e.message}`));
    }
    // The host's shim goes and its address goes back (host_access), while the pool is still there.
    await removeHostAccess(ctx, rec);
    // First the cluster: removing a member of a cluster network removes it from every host, and the
    // controller refuses while another host has endpoints on it (Docker then keeps the network here).
    // Docker removes the network whatever DeleteNetwork answers (libnetwork only logs a driver's error), so a
    // refusal cannot stop `docker network rm` here (the authorization hook can, before it starts): record only
    // this host's removal, and the replica reconcile puts the cluster's network back.
    try {
      const r = await ctx.controller.networkRemove({ networkId: id }, { deadlineMs: 10_000 });
      // Reconcile only with a view that has seen this removal (else it would put the network back).
      if (r.seq !== undefined) ctx.memory.changeRecorded(r.seq, r.chains);
    } catch (e) {
      if (e instanceof UnderlayError && e.code === 'conflict') {
        ctx.log(`docker network rm refused for the cluster, so the network comes back on this host: ${e.message}`);
        await ctx.controller.networkRemove({ networkId: id, cluster: false }, { deadlineMs: 10_000 }).catch(() => {});
      } else if (e instanceof UnderlayError && e.code === 'unavailable') {
        logWarn(ctx.log, `network ${id.slice(0, 12)} removal not recorded (the controller did not answer): ${(e as Error).message}`);
      } else {
        throw e;
      }
    }
    for (const ep of [...ctx.store.endpoints.values()].filter((e) => e.networkId === id)) {
      if (ep.srcName) await ctx.links.deleteLink(ep.srcName).catch(() => false);
      ctx.store.deleteEndpoint(ep.id);
    }
    ctx.store.deleteNetwork(id);
    ctx.memory.conflicts.delete(id);
    ctx.memory.networkGone(id);
    const stillUsed = [...ctx.store.networks.values()].some((n) => n.parent === rec.parent);
    if (rec.createdParent && !stillUsed) {
      await removeCreatedParent(ctx.links, rec.parent).catch((e) => logWarn(ctx.log, `could not delete parent ${rec.parent}: ${(e as Error).message}`));
    }
    ctx.log(`network ${id.slice(0, 12)} deleted`);
    ctx.onNetworksChanged?.();
    return {};
  });
}
