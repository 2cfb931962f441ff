/**
 * What this host's Docker holds on underlay networks, read from the Docker Engine API: every network whose
 * driver is underlay (and every network the local store knows, in case Docker lists it otherwise) with the
 * endpoints of the containers attached to it. The node report lists these endpoints whatever the local store
 * says (the leak rules rely on it), and a restarted agent rebuilds its store from them.
 */
import { z } from 'zod';
import { DockerNetworkInspect, plugin } from '@underlay/core';
import type { DockerEngine } from '@underlay/adapters';

/** One container's endpoint as `GET /networks/{id}` lists it. */
const DockerEndpoint = z.object({
  Name: z.string().optional(),
  EndpointID: z.string().optional(),
  MacAddress: z.string().optional(),
  IPv4Address: z.string().optional(),
  IPv6Address: z.string().optional(),
});

export interface DockerEndpointInfo {
  endpointId: string;
  containerId: string;
  container?: string;
  /** CIDR, as Docker shows it (`192.0.2.2/24`). */
  address?: string;
  addressV6?: string;
  mac?: string;
}

export interface DockerNetworkInfo {
  network: DockerNetworkInspect;
  endpoints: DockerEndpointInfo[];
}

export interface DockerUnderlayState {
  /** False when Docker could not be listed (then `networks` holds what could be inspected). */
  complete: boolean;
  networks: Map<string, DockerNetworkInfo>;
  errors: string[];
}

type DockerLike = Pick<DockerEngine, 'listNetworks' | 'inspectNetwork'>;

function parseNetwork(raw: unknown): DockerNetworkInfo {
  const network = DockerNetworkInspect.parse(raw);
  const containers = (raw as { Containers?: Record<string, unknown> | null }).Containers ?? {};
  const endpoints: DockerEndpointInfo[] = [];
  for (const [containerId, c] of Object.entries(containers)) {
    const e = DockerEndpoint.safeParse(c);
    if (!e.success || !e.data.EndpointID) continue;
    endpoints.push({
      endpointId: e.data.EndpointID,
      containerId,
      container: e.data.Name || undefined,
      address: e.data.IPv4Address || undefined,
      addressV6: e.data.IPv6Address || undefined,
      mac: e.data.MacAddress || undefined,
    });
  }
  return { network, endpoints };
}

/** Reads every underlay network of this Docker (and `alsoIds`) with its endpoints. Never throws. */
export async function readDockerUnderlay(docker: DockerLike, alsoIds: Iterable<string> = []): Promise<DockerUnderlayState> {
  const errors: string[] = [];
  const ids = new Set<string>();
  let complete = true;
  try {
    for (const raw of await docker.listNetworks(plugin.PLUGIN_NAME)) {
      const id = (raw as { Id?: unknown })?.Id;
      if (typeof id === 'string' && id) ids.add(id);
    }
  } catch (e) {
    complete = false;
    errors.push(`Docker's networks could not be listed: ${(e as Error).message}`);
  }
  for (const id of alsoIds) ids.add(id);
  const networks = new Map<string, DockerNetworkInfo>();
  await Promise.all(
    [...ids].map(async (id) => {
      try {
        const raw = await docker.inspectNetwork(id);
        if (raw) networks.set(id, parseNetwork(raw));
      } catch (e) {
        complete = false;
        errors.push(`Docker network ${id.slice(0, 12)} could not be read: ${(e as Error).message}`);
      }
    }),
  );
  return { complete, networks, errors };
}
