/**
 * Addresses this host's containers gave back a moment ago, handed out again first: a restarted container comes back
 * with its address.
 *
 * Docker gives a restarted container a new endpoint and asks the IPAM for an address without naming one, both when a
 * restart policy restarts it and when dockerd starts again after a crash or a power cut (it first deletes the
 * endpoints of the containers that died with it, then starts those with `--restart always`). Docker's own IPAM
 * then hands out another address (moby#2801); so did underlay. Here, an endpoint's address released by this host's
 * Docker is held for `holdMs` (its allocation stays this host's in the cluster) and the next endpoint request for
 * the same pool on this host gets it back, the one released last first (a restart releases and asks at once); after
 * `holdMs` it goes back to the cluster. Docker does not say which container asks: one container restarting gets its
 * own address back; several restarting together get their former addresses back between them (use `--ip` where an
 * address must never move).
 *
 * Held only while a network of this host uses the pool (endpoint addresses; the gateway and --aux-address go when the
 * network goes). A pool's holds are released before the pool itself (ReleasePool); holds do not outlive the agent
 * (a stopped agent's holds are released at stop; a killed agent's are reclaimed by the leak collector).
 *
 * On a sticky pool (`--ipam-opt sticky=true`, sticky.ts) a released address whose container the agent knew is held for
 * that container's name (`owner`) for `stickyHoldMs` instead: only a container of that name gets it back; the others
 * pass it over.
 */
import { parseAddr, parseCidr, contains } from '@underlay/core';
import type { Log } from './context.js';

export interface Hold {
  poolId: string;
  address: string;
  /** The address with its network's prefix, as RequestAddress answers (`192.0.2.3/24`). */
  cidr: string;
  allocSeq: number;
  heldAtMs: number;
  /** Sticky pools: the name of the container the address is held for (only it gets the address back). */
  owner?: string;
}

export interface AddressHoldsOptions {
  /** How long a released address waits for its container (0: released at once, as Docker's IPAM does). */
  holdMs: number;
  /** How long a sticky pool's address waits for its container's name (0 or absent: no holds for a name). */
  stickyHoldMs?: number;
  /** Gives the address back to the cluster (the controller's releaseAddress, then the store). */
  release: (h: Hold) => Promise<void>;
  log: Log;
  now?: () => number;
  /** Called after an address is held (the agent reports it at once: the controller then counts it as no endpoint's). */
  onHold?: () => void;
}

export class AddressHolds {
  /** poolId → holds, in the order they were released. */
  private readonly held = new Map<string, Hold[]>();
  private readonly timers = new Map<Hold, NodeJS.Timeout>();
  private readonly now: () => number;

  constructor(private readonly opts: AddressHoldsOptions) {
    this.now = opts.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.opts.holdMs > 0;
  }

  /** Addresses of sticky pools are held for their container's name (call `hold` with an owner only when true). */
  get stickyEnabled(): boolean {
    return (this.opts.stickyHoldMs ?? 0) > 0;
  }

  /** Holds an address Docker released (call only when `enabled`, or `stickyEnabled` with an owner). */
  hold(h: Omit<Hold, 'heldAtMs'>): void {
    const hold: Hold = { ...h, heldAtMs: this.now() };
    const list = this.held.get(h.poolId) ?? [];
    list.push(hold);
    this.held.set(h.poolId, list);
    const t = setTimeout(() => void this.expire(hold), h.owner !== undefined ? (this.opts.stickyHoldMs ?? 0) : this.opts.holdMs);
    t.unref();
    this.timers.set(hold, t);
    this.opts.onHold?.();
  }

  /**
   * The address of the pool released last for a container named `owner` (sticky pools), else the one released last
   * for no name; no longer held (undefined: none). Addresses held for another name are passed over.
   */
  take(poolId: string, owner?: string): Hold | undefined {
    const list = this.held.get(poolId) ?? [];
    const last = (want: string | undefined): number => {
      for (let j = list.length - 1; j >= 0; j--) if (list[j]!.owner === want) return j;
      return -1;
    };
    let i = owner === undefined ? -1 : last(owner);
    if (i < 0) i = last(undefined);
    if (i < 0) return undefined;
    const [h] = list.splice(i, 1);
    if (list.length === 0) this.held.delete(poolId);
    this.unschedule(h!);
    const after = `${Math.round((this.now() - h!.heldAtMs) / 1000)} s after its endpoint went`;
    this.opts.log(h!.owner !== undefined ? `address ${h!.address} given back to container ${JSON.stringify(h!.owner)} on this host, ${after} (sticky)` : `address ${h!.address} given back to a container on this host, ${after} (restart)`);
    return h;
  }

  /** The name a held address waits for (undefined: not held, or held for no name). */
  ownerOf(poolId: string, address: string): string | undefined {
    return this.held.get(poolId)?.find((h) => h.address === address)?.owner;
  }

  /** Stops holding the address without releasing it (the caller releases it or hands it out); undefined when not held. */
  forget(poolId: string, address: string): Hold | undefined {
    const list = this.held.get(poolId);
    const i = list ? list.findIndex((h) => h.address === address) : -1;
    if (i < 0) return undefined;
    const [h] = list!.splice(i, 1);
    if (list!.length === 0) this.held.delete(poolId);
    this.unschedule(h!);
    return h;
  }

  /** Held addresses, for status and tests. */
  list(): Hold[] {
    return [...this.held.values()].flat();
  }

  /** Releases every held address of the pool now (before ReleasePool). */
  async releasePool(poolId: string): Promise<void> {
    const list = this.held.get(poolId) ?? [];
    this.held.delete(poolId);
    for (const h of list) {
      this.unschedule(h);
      await this.opts.release(h);
    }
  }

  /** Releases every held address (agent stop); failures are logged. */
  async releaseAll(): Promise<void> {
    for (const poolId of [...this.held.keys()]) {
      await this.releasePool(poolId).catch((e: unknown) => this.opts.log(`held addresses of pool ${poolId} not released: ${(e as Error).message}`));
    }
  }

  private unschedule(h: Hold): void {
    const t = this.timers.get(h);
    if (t) clearTimeout(t);
    this.timers.delete(h);
  }

  private async expire(h: Hold): Promise<void> {
    const list = this.held.get(h.poolId);
    const i = list ? list.indexOf(h) : -1;
    if (i < 0) return;
    list!.splice(i, 1);
    if (list!.length === 0) this.held.delete(h.poolId);
    this.timers.delete(h);
    try {
      await this.opts.release(h);
    } catch (e) {
      // The allocation stays this host's; the leak collector reclaims it (no endpoint holds it).
      this.opts.log(`held address ${h.address} not released: ${(e as Error).message} (the leak collector reclaims it)`);
    }
  }
}

/** The address with the prefix of the network pool that contains it (`pools`: the CIDRs of the networks using the pool). */
export function withPoolPrefix(address: string, pools: readonly string[]): string | undefined {
  const a = parseAddr(address);
  for (const p of pools) {
    const c = parseCidr(p);
    if (contains(c, a)) return `${address}/${c.prefix}`;
  }
  return undefined;
}
