/**
 * How a refusal names a Docker network: by the name the user typed, with its short id (`"n1" (29033300c887)`), as
 * libnetwork's texts name it by id only. The name comes from the cluster view (NetworkNamed events: no I/O), else
 * from Docker (bounded: a call made while dockerd waits for this plugin must not wait long), else only the id.
 */
import type { Docker } from './context.js';

export interface NetworkNameSources {
  docker?: Pick<Docker, 'networkName'>;
  clusterNetworkName?: (networkId: string) => string | undefined;
}

/** The longest a refusal waits for Docker to name a network. */
export const NAME_LOOKUP_MS = 2_000;

export async function networkNameOf(ctx: NetworkNameSources, id: string): Promise<string | undefined> {
  const known = ctx.clusterNetworkName?.(id);
  if (known) return known;
  if (!ctx.docker) return undefined;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), NAME_LOOKUP_MS)));
  try {
    return await Promise.race([ctx.docker.networkName(id).catch(() => undefined), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `"n1" (29033300c887)`, or `29033300c887` when no name is known. */
export async function networkLabel(ctx: NetworkNameSources, id: string): Promise<string> {
  const name = await networkNameOf(ctx, id);
  return name ? `${JSON.stringify(name)} (${id.slice(0, 12)})` : id.slice(0, 12);
}

/** libnetwork's `network id "…" not found`, with the name when one is known: `network "n1" (id "…") not found`. */
export async function networkNotFoundText(ctx: NetworkNameSources, id: string): Promise<string> {
  const name = await networkNameOf(ctx, id);
  return name ? `network ${JSON.stringify(name)} (id ${JSON.stringify(id)}) not found` : `network id ${JSON.stringify(id)} not found`;
}
