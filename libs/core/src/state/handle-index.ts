/**
 * A pool's idempotency handles (handle → address value), derived from its allocations (each carries its handle) and
 * built only when first asked. A state restored from a snapshot (the controller's cold start, every agent's view) and
 * every copy of one start without it: at 1M allocations filling its Map was ~1 s of a controller's cold start, and
 * agents, which never decide, never need it. The controller builds it a slice at a time after it loads
 * (`buildInSlices`); a request that needs it sooner finishes the build at once.
 *
 * Kept consistent without forcing a build: the fold reports each allocation's handle (`added`) and each release
 * (`released`); while the index is not started they change nothing (the build reads the allocations as they are
 * then), while it is being built they change what is built so far (the build's iterator over the allocations sees
 * allocations added after it started and skips those deleted).
 *
 * Iterable (entries), so that two states compare by content in tests. Built from the allocations, its entries come
 * in the allocations' order, which is the order the fold adds handles in.
 */
import type { Allocation } from './cluster-state.js';

export class HandleIndex implements Iterable<[string, bigint]> {
  #map: Map<string, bigint> | undefined;
  #pending: Iterator<[bigint, Allocation]> | undefined;

  constructor(private readonly allocs: ReadonlyMap<bigint, Allocation>) {
    // Not enumerable: tests compare states by content (the iterator), not by this back reference.
    Object.defineProperty(this, 'allocs', { enumerable: false });
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
    this.#map?.set(handle, value);
  }

  /** The fold released `value`, allocated with `handle`. */
  released(handle: string, value: bigint): void {
    if (this.#map?.get(handle) === value) this.#map.delete(handle);
  }

  /**
   * Indexes up to `slice` allocations; true when the index is complete. Between calls the caller may yield and the
   * state may change (see the header).
   */
  buildSome(slice: number): boolean {
    if (this.#map === undefined) {
      this.#map = new Map();
      this.#pending = this.allocs.entries();
    }
    const it = this.#pending;
    if (!it) return true;
    const m = this.#map;
    for (let i = 0; i < slice; i++) {
      const r = it.next();
      if (r.done) {
        this.#pending = undefined;
        return true;
      }
      const h = r.value[1].handle;
      if (h !== undefined) m.set(h, r.value[0]);
    }
    return false;
  }

  *[Symbol.iterator](): Iterator<[string, bigint]> {
    yield* this.index();
  }

  private index(): Map<string, bigint> {
    if (!this.built) this.buildSome(Infinity);
    return this.#map!;
  }
}
