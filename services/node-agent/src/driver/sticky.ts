/**
 * Stable identities (`--ipam-opt sticky=true`): a container re-created with the same name on a network of a sticky
 * pool gets its former address back while it is held (address-holds.ts, `--sticky-hold-ms`) and, on macvlan, a MAC
 * derived from the network's and the container's names (unless `--mac-address` names one).
 *
 * Docker's remote IPAM and driver APIs name no container. When Docker asks a sticky pool for an endpoint's address
 * (RequestAddress, during `docker start`), the agent lists this host's containers (GET /containers/json?all=1: Docker
 * answers it from its replica of the containers' state, without the lock the start holds; seen answering during the
 * start in test/e2e/sticky.test.ts) and looks for the one being connected to a network of the pool: on it, but with
 * no endpoint there yet. The list shows a container's networks as they were before the start: a container never
 * started (`docker run`, `docker create`) has its network under the name (or id) it was created with and no NetworkID
 * yet; one started before has the NetworkID. Exactly one such container is the identity. With several (other stopped containers on the network), the ones whose start Docker's authorization hook
 * just saw (`POST /containers/{id or name}/start` or `/restart`, when dockerd runs with
 * `--authorization-plugin=underlay`) narrow it down; still several, or none: no identity, a normal allocation, logged.
 *
 * The address → identity is kept for the endpoint (CreateEndpoint derives the MAC from it) and goes with the address
 * when Docker releases it (held for that name only). Kept in the agent's memory: an agent restart forgets the
 * identities of the endpoints it did not see allocated (their addresses are released at once, as without the option).
 */
import { createHash } from 'node:crypto';
import { STICKY_OPTION, booleanPoolOption, type DockerContainerSummary } from '@underlay/core';
import type { Docker, Log } from './context.js';

/** A container by its Docker name (without the leading slash) on a network by its Docker name. */
export interface Identity {
  container: string;
  network: string;
}

/**
 * The MAC of a sticky endpoint: the same for the same network and container names on every host and after every
 * re-creation. Locally administered unicast; the first byte is never 0x02, so it never equals a MAC Docker or
 * underlay derives from an address (02:42:…).
 */
export function stickyMac(network: string, container: string): string {
  const h = createHash('sha256').update(`underlay-sticky\0${network}\0${container}`).digest();
  const b = [(h[0]! & 0xf0) | 0x0a, h[1]!, h[2]!, h[3]!, h[4]!, h[5]!];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** A container Docker may be connecting to a network: on it, with no endpoint there yet. */
export interface Candidate extends Identity {
  id: string;
}

/** One of this host's networks of the pool: its Docker id and, when known, its Docker name. */
export interface PoolNetwork {
  id: string;
  name?: string;
}

const GONE = new Set(['removing', 'dead']);

/**
 * The network a container's entry is for: by its NetworkID, or (a container never started: no NetworkID yet) by the
 * key Docker filed it under, which is what `--network` named: the network's name, its id or an id prefix.
 */
function networkOf(key: string, networkId: string | undefined, networks: readonly PoolNetwork[]): PoolNetwork | undefined {
  if (networkId) return networks.find((n) => n.id === networkId);
  return networks.find((n) => n.name === key) ?? (/^[0-9a-f]+$/.test(key) ? networks.find((n) => n.id.startsWith(key)) : undefined);
}

/** The containers on one of `networks` with no endpoint there (being started or connected, or stopped). */
export function candidates(containers: readonly DockerContainerSummary[], networks: readonly PoolNetwork[]): Candidate[] {
  const out: Candidate[] = [];
  for (const c of containers) {
    if (c.State && GONE.has(c.State)) continue;
    const name = c.Names?.[0]?.replace(/^\//, '');
    if (!name) continue;
    for (const [key, s] of Object.entries(c.NetworkSettings?.Networks ?? {})) {
      if (!s || s.EndpointID) continue;
      const n = networkOf(key, s.NetworkID, networks);
      // The MAC derives from the network's name: the same key on every host, whatever --network said.
      if (n) out.push({ id: c.Id, container: name, network: n.name ?? key });
    }
  }
  return out;
}

/** A start request's target (`web`, a full id or an id prefix) names the candidate. */
const names = (ref: string, c: Candidate): boolean => ref === c.container || (ref.length >= 1 && /^[0-9a-f]+$/.test(ref) && c.id.startsWith(ref));

export type IdentityPick = { identity: Identity } | { ambiguous: string[] } | { none: true };

/**
 * The container being connected: the only candidate, or the only one among those just started (`starting`: the
 * targets of the start requests the authorization hook saw a moment ago).
 */
export function pickIdentity(cands: readonly Candidate[], starting: readonly string[]): IdentityPick {
  if (cands.length === 0) return { none: true };
  const started = cands.filter((c) => starting.some((ref) => names(ref, c)));
  const one = started.length === 1 ? started[0] : cands.length === 1 ? cands[0] : undefined;
  if (one) return { identity: { container: one.container, network: one.network } };
  return { ambiguous: (started.length > 1 ? started : cands).map((c) => c.container).sort() };
}

/** How long a start request seen by the authorization hook narrows the candidates (its RequestAddress follows at once). */
export const START_SEEN_MS = 30_000;
const MAX_STARTS = 64;
const MAX_NAMES = 1024;

const START_URI = /^(?:\/v[0-9.]+)?\/containers\/([^/?]+)\/(?:start|restart)\/?(?:\?.*)?$/;

/** The container a `POST /containers/{id or name}/start` (or `/restart`) request starts, if it is one. */
export function startedContainer(method: string | undefined, uri: string | undefined): string | undefined {
  if (method !== 'POST') return undefined;
  const m = START_URI.exec(uri ?? '');
  if (!m) return undefined;
  try {
    return decodeURIComponent(m[1]!).replace(/^\//, '');
  } catch {
    return undefined;
  }
}

export interface StickyOptions {
  docker: Pick<Docker, 'listContainers'>;
  log: Log;
  /** A network's Docker name by its id (network-names.ts: the cluster view, else Docker, bounded). */
  networkName?: (networkId: string) => Promise<string | undefined>;
  /** A pool's --ipam-opt as the cluster view knows it (after an agent restart, before Docker asks for the pool again). */
  poolOptions?: (poolId: string) => Readonly<Record<string, string>> | undefined;
  now?: () => number;
}

/** The agent's sticky identities: which pools are sticky, which container an address is for, recent start requests. */
export class StickyIdentities {
  /** Pools Docker asked for with sticky=true (RequestPool's options). */
  private readonly pools = new Set<string>();
  /** `<pool id>|<address>` → the identity the address was handed out for. */
  private readonly byAddress = new Map<string, Identity>();
  private starts: { ref: string; atMs: number }[] = [];
  /** Network id → Docker name (names of networks this host used; forgotten past MAX_NAMES). */
  private readonly networkNames = new Map<string, string>();
  private readonly now: () => number;

  constructor(private readonly opts: StickyOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** RequestPool: remembers a sticky pool (its options were checked by the controller). */
  notePool(poolId: string, options: Readonly<Record<string, string>>): void {
    if (options[STICKY_OPTION] === 'true') this.pools.add(poolId);
  }

  isSticky(poolId: string): boolean {
    if (this.pools.has(poolId)) return true;
    try {
      return booleanPoolOption(this.opts.poolOptions?.(poolId) ?? {}, STICKY_OPTION);
    } catch {
      return false;
    }
  }

  /** The authorization hook saw a start request for this container (id, id prefix or name). */
  noteStart(ref: string): void {
    const now = this.now();
    this.starts = this.starts.filter((s) => now - s.atMs < START_SEEN_MS).slice(-(MAX_STARTS - 1));
    this.starts.push({ ref, atMs: now });
  }

  /** The container Docker is connecting to one of `networkIds` (the networks of the pool here), if it can be told. */
  async resolve(poolId: string, networkIds: readonly string[]): Promise<Identity | undefined> {
    if (networkIds.length === 0) return undefined;
    let list: DockerContainerSummary[];
    try {
      list = await this.opts.docker.listContainers();
    } catch (e) {
      this.opts.log(`sticky pool ${poolId}: Docker's containers could not be listed, the address is allocated as without sticky: ${(e as Error).message}`);
      return undefined;
    }
    const networks = await Promise.all(networkIds.map(async (id) => ({ id, name: await this.nameOf(id) })));
    const now = this.now();
    const starting = this.starts.filter((s) => now - s.atMs < START_SEEN_MS).map((s) => s.ref);
    const pick = pickIdentity(candidates(list, networks), starting);
    if ('identity' in pick) return pick.identity;
    if ('ambiguous' in pick) {
      this.opts.log(
        `sticky pool ${poolId}: cannot tell which container is being started among ${pick.ambiguous.map((n) => JSON.stringify(n)).join(', ')} ` +
          '(stopped containers on the network; dockerd with --authorization-plugin=underlay tells them apart): the address is allocated as without sticky',
      );
    } else {
      this.opts.log(`sticky pool ${poolId}: no container in Docker's list is being connected to its network here: the address is allocated as without sticky`);
    }
    return undefined;
  }

  /** A network's name, kept once known (a Docker network keeps its name for its life). */
  private async nameOf(id: string): Promise<string | undefined> {
    const known = this.networkNames.get(id);
    if (known !== undefined) return known;
    const name = await this.opts.networkName?.(id).catch(() => undefined);
    if (name !== undefined) {
      if (this.networkNames.size >= MAX_NAMES) this.networkNames.clear();
      this.networkNames.set(id, name);
    }
    return name;
  }

  /** The address was handed out for `identity`. */
  remember(poolId: string, address: string, identity: Identity): void {
    this.byAddress.set(`${poolId}|${address}`, identity);
  }

  identityOf(poolId: string, address: string): Identity | undefined {
    return this.byAddress.get(`${poolId}|${address}`);
  }

  /** The address was released: its identity, no longer kept. */
  forget(poolId: string, address: string): Identity | undefined {
    const key = `${poolId}|${address}`;
    const id = this.byAddress.get(key);
    this.byAddress.delete(key);
    return id;
  }
}
