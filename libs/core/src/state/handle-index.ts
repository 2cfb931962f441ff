/**
 * A pool's idempotency handles (handle → address value), derived from its allocations (each carries its handle) and
 * built only when first asked. A state restored from a snapshot (the controller's cold start, every agent's view) and
 * every copy of one start without it: at 1M allocations filling its Map was ~1 s of a controller's cold start, and
 * agents, which never decide, never need it. The controller builds it a slice at a time after it loads
 * (`buildHandleIndexes`); a request that needs it sooner finishes the build at once.
 *
 * Kept consistent without forcing a build: the fold reports each allocation's handle (`added`) and each release
 * (`released`); while the index is not started they change nothing (the build reads the allocations as they are
 * then), while it is being built they change what is built so far (the build's iterator over the allocations sees
 * allocations added after it started and skips those deleted). Whenever it is built, a handle maps to its newest
 * live holder (the allocations' order is the fold's): the same answer for a retried request whether the index was
 * built before a release or after.
 *
 * Iterable (entries), so that two states compare by content in tests. Built from the allocations, its entries come
 * in the allocations' order, which is the order the fold adds handles in.
 */
import type { Allocation } from './cluster-state.js';

export class HandleIndex implements Iterable<[string, bigint]> {
  #map: Map<string, bigint> | undefined;
  #pending: Iterator<[bigint, Allocation]> | undefined;
  /**
   * Handles held by more than one live allocation (a request naming another address under a handle already held
   * allocates a second one): the holders other than the mapped one, oldest first. So the index is what the
   * allocations say whenever it is built: the newest live holder, also after the newest is released.
   */
  readonly #others = new Map<string, bigint[]>();

  /** Private (not an own property): tests compare states by content (the iterator), not by this back reference. */
  readonly #allocs: ReadonlyMap<bigint, Allocation>;

  constructor(allocs: ReadonlyMap<bigint, Allocation>) {
    this.#allocs = allocs;
  }

  /** True once every allocation is indexed. */
  get built(): boolean {
    return this.#map !== undefined && this.#pending === undefined;
  }

  /** The address value holding `handle` (the latest allocation with it), building the index first if needed. */
  get(handle: string): bigint | undefined {
    return this.index().get(handle);
  }

  get size(): number {
    return this.index().size;
  }

  /** The fold allocated `value` with `handle`. */
  added(handle: string, value: bigint): void {
    if (this.#map) this.#put(this.#map, handle, value);
  }

  /** The fold released `value`, allocated with `handle`. */
  released(handle: string, value: bigint): void {
    const m = this.#map;
    if (!m) return;
    const others = this.#others.get(handle);
    if (m.get(handle) === value) {
      // The newest other holder, if any, holds the handle now.
      const next = others?.pop();
      if (next === undefined) m.delete(handle);
      else m.set(handle, next);
    } else if (others) {
      const i = others.indexOf(value);
      if (i >= 0) others.splice(i, 1);
    } else return;
    if (others && others.length === 0) this.#others.delete(handle);
  }

  /** `value` holds `handle` too: mapped if it is the newest holder (by allocation seq), else kept among the others. */
  #put(m: Map<string, bigint>, handle: string, value: bigint): void {
    const held = m.get(handle);
    if (held === value) return;
    if (held === undefined) {
      m.set(handle, value);
      return;
    }
    const seq = (v: bigint) => this.#allocs.get(v)?.seq ?? 0;
    let others = this.#others.get(handle);
    // Seen already (the fold added it while the build had not reached it yet).
    if (others?.includes(value)) return;
    if (!others) this.#others.set(handle, (others = []));
    let older = value;
    if (seq(value) > seq(held)) {
      m.set(handle, value);
      older = held;
    }
    // Oldest first: `released` takes the newest from the end.
    let i = others.length;
    while (i > 0 && seq(others[i - 1]!) > seq(older)) i--;
    others.splice(i, 0, older);
  }

  /**
   * Indexes up to `slice` allocations (at least one step); returns how many it visited (`built` tells whether it is
   * complete). Between calls the caller may yield and the state may change (see the header).
   */
  buildSome(slice: number): number {
    if (this.#map === undefined) {
      this.#map = new Map();
      this.#pending = this.#allocs.entries();
    }
    const it = this.#pending;
    if (!it) return 0;
    const m = this.#map;
    let i = 0;
    for (; i < Math.max(1, slice); i++) {
      const r = it.next();
      if (r.done) {
        this.#pending = undefined;
        break;
      }
      // As the fold: an allocation with no handle (or an empty one) is not indexed.
      const h = r.value[1].handle;
      if (h) this.#put(m, h, r.value[0]);
    }
    return i;
  }

  *[Symbol.iterator](): Iterator<[string, bigint]> {
    yield* this.index();
  }

  private index(): Map<string, bigint> {
    if (!this.built) this.buildSome(Infinity);
    return this.#map!;
  }
}
