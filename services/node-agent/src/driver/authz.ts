/**
 * Docker's authorization hook (AuthZPlugin), served on the same socket when dockerd runs with
 * `--authorization-plugin=underlay` (or "authorization-plugins" in daemon.json, reloadable with SIGHUP).
 *
 * libnetwork removes a network whatever the driver's DeleteNetwork answers, so this hook is the only
 * way to refuse `docker network rm` up front. It looks only at `DELETE /networks/{id or name}` of an
 * underlay network and asks the controller whether the cluster would refuse the removal (endpoints
 * on other hosts); every other request is allowed at once. When the controller cannot be reached the
 * removal is allowed (and handled as in DeleteNetwork).
 *
 * It also notes `POST /containers/{id or name}/start` (and `/restart`): on a sticky pool, the container whose start it
 * just saw is the one Docker connects next (sticky.ts). Those are allowed at once too.
 */
import { UnderlayError, plugin } from '@underlay/core';
import { z } from 'zod';
import type { ControllerClient, Docker, Log } from './context.js';
import { startedContainer, type StickyIdentities } from './sticky.js';
import { logWarn } from '@underlay/adapters';

/** What the authorization hook uses. */
export interface AuthzDeps {
  docker: Pick<Docker, 'inspectNetwork'>;
  controller: ControllerClient;
  log: Log;
  /** The name Docker knows this plugin by (--driver-name): `underlay` for the socket plugin, `underlay/underlay:VERSION` as a managed plugin. */
  driverName?: string;
  /** Container starts tell sticky pools which container Docker connects next (sticky.ts). */
  sticky?: Pick<StickyIdentities, 'noteStart'>;
}

const AuthZRequest = z.looseObject({
  RequestMethod: z.string().optional(),
  RequestUri: z.string().optional(),
});

export interface AuthZResponse {
  Allow: boolean;
  Msg?: string;
  Err?: string;
}

const NETWORK_DELETE = /^(?:\/v[0-9.]+)?\/networks\/([^/?]+)\/?(?:\?.*)?$/;

/** The network (id or name) a request removes, if it is `DELETE /networks/{id or name}`: the only request this hook looks at. */
export function removedNetwork(raw: unknown): string | undefined {
  const req = AuthZRequest.safeParse(raw);
  if (!req.success || req.data.RequestMethod !== 'DELETE') return undefined;
  const m = NETWORK_DELETE.exec(req.data.RequestUri ?? '');
  return m ? decodeURIComponent(m[1]!) : undefined;
}

export async function authzRequest(ctx: AuthzDeps, raw: unknown): Promise<AuthZResponse> {
  const req = AuthZRequest.safeParse(raw);
  const started = req.success ? startedContainer(req.data.RequestMethod, req.data.RequestUri) : undefined;
  if (started !== undefined) ctx.sticky?.noteStart(started);
  const target = removedNetwork(raw);
  if (target === undefined) return { Allow: true };
  const uri = (raw as { RequestUri?: string }).RequestUri;
  try {
    const n = await ctx.docker.inspectNetwork(target);
    if (!n || n.Driver !== (ctx.driverName ?? plugin.PLUGIN_NAME)) return { Allow: true };
    await ctx.controller.networkRemove({ networkId: n.Id, dryRun: true }, { deadlineMs: 5_000, timeoutMs: 5_000 });
    return { Allow: true };
  } catch (e) {
    if (e instanceof UnderlayError && e.code === 'conflict') return { Allow: false, Msg: e.message };
    logWarn(ctx.log, `authorization check of ${uri} failed, allowing it: ${(e as Error).message}`);
    return { Allow: true };
  }
}

/** Responses are never held back. */
export function authzResponse(): AuthZResponse {
  return { Allow: true };
}
