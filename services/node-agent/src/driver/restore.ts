/**
 * Agent start after a restart or a host reboot (libnetwork: macvlan_store.go's populateNetworks and
 * populateEndpoints): networks and endpoints come back from the local store; parents underlay
 * created (802.1q sub-interfaces, dummies) that are gone are re-created; endpoint links underlay
 * made that no endpoint owns any more are removed. Links inside running containers are not in the
 * host namespace and are never touched, so containers keep their connectivity throughout.
 */
import { isEndpointLinkName, parseNetworkOptions } from '@underlay/core';
import type { DriverContext } from './context.js';
import { ensureParent } from './links.js';

export interface RestoreReport {
  networks: number;
  endpoints: number;
  parentsRecreated: string[];
  staleLinksRemoved: string[];
  errors: string[];
}

export async function restore(ctx: DriverContext, listLinkNames: () => Promise<string[]>): Promise<RestoreReport> {
  const report: RestoreReport = { networks: ctx.store.networks.size, endpoints: ctx.store.endpoints.size, parentsRecreated: [], staleLinksRemoved: [], errors: [] };
  for (const n of ctx.store.networks.values()) {
    if (!n.createdParent) continue;
    try {
      if (await ctx.links.getLink(n.parent)) continue;
      const o = parseNetworkOptions({ type: n.type, ...(n.requestedParent ? { parent: n.requestedParent } : {}) }, { internal: n.internal });
      await ensureParent(ctx.links, n.id, o);
      report.parentsRecreated.push(n.parent);
    } catch (e) {
      report.errors.push(`network ${n.id.slice(0, 12)}: parent ${n.parent} could not be re-created: ${(e as Error).message}`);
    }
  }
  const owned = new Set([...ctx.store.endpoints.values()].map((e) => e.srcName).filter(Boolean));
  for (const name of await listLinkNames()) {
    if (!isEndpointLinkName(name) || owned.has(name)) continue;
    try {
      if (await ctx.links.deleteLink(name)) report.staleLinksRemoved.push(name);
    } catch (e) {
      report.errors.push(`stale link ${name} could not be removed: ${(e as Error).message}`);
    }
  }
  return report;
}
