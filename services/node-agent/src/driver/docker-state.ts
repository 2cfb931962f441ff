/**
 * What this host's Docker holds on underlay networks, read from the Docker Engine API: every network whose
 * driver is underlay (and every network the local store knows, in case Docker lists it otherwise) with the
 * endpoints of the containers attached to it. The node report lists these endpoints whatever the local store
 * says (the leak rules rely on it), and a restarted agent rebuilds its store from them.
 */
import { plugin, type DockerNetworkInspect } from '@underlay/core';
import type { Docker } from './context.js';

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

type DockerLike = Pick<Docker, 'listNetworkIds' | 'inspectNetwork'>;

function networkInfo(network: DockerNetworkInspect): DockerNetworkInfo {
  const endpoints: DockerEndpointInfo[] = [];
  for (const [containerId, c] of Object.entries(network.Containers ?? {})) {
    if (!c.EndpointID) continue;
    endpoints.push({
      endpointId: c.EndpointID,
      containerId,
      container: c.Name || undefined,
      address: c.IPv4Address || undefined,
      addressV6: c.IPv6Address || undefined,
      mac: c.MacAddress || undefined,
    });
  }
  return { network, endpoints };
}

/** Reads every underlay network of this Docker (and `alsoIds`) with its endpoints. Never throws. */
export async function readDockerUnderlay(docker: DockerLike, alsoIds: Iterable<string> = [], driverName: string = plugin.PLUGIN_NAME): Promise<DockerUnderlayState> {
  const errors: string[] = [];
  const ids = new Set<string>();
  let complete = true;
  try {
    for (const id of await docker.listNetworkIds(driverName)) ids.add(id);
  } catch (e) {
    complete = false;
    errors.push(`Docker's networks could not be listed: ${(e as Error).message}`);
  }
  for (const id of alsoIds) ids.add(id);
  const networks = new Map<string, DockerNetworkInfo>();
  await Promise.all(
    [...ids].map(async (id) => {
      try {
        const network = await docker.inspectNetwork(id);
        if (network) networks.set(id, networkInfo(network));
      } catch (e) {
        complete = false;
        errors.push(`Docker network ${id.slice(0, 12)} could not be read: ${(e as Error).message}`);
      }
    }),
  );
  return { complete, networks, errors };
}
