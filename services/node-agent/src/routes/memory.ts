/**
 * An in-memory routing table with the RouteOps contract (EEXIST on add, protocol-matched delete):
 * for unit tests and for the simulated agents of bench/routes.js. Not a kernel: say so wherever used.
 */
import { NetlinkError, type KernelRoute, type RouteOps, type RouteSpec } from '@underlay/adapters';

export class MemoryRouteOps implements RouteOps {
  readonly table = new Map<string, KernelRoute>();
  /** Called after each change (for measuring when a route appeared). */
  onChange?: (kind: 'add' | 'delete', r: KernelRoute) => void;
  /** When set, only these devices exist (others give ENODEV). */
  devices?: Set<string>;
  closed = false;

  async listRoutes(filter: { protocol?: number } = {}): Promise<KernelRoute[]> {
    this.check('listRoutes');
    return [...this.table.values()].filter((r) => filter.protocol === undefined || r.protocol === filter.protocol).map((r) => ({ ...r }));
  }

  async addRoute(r: RouteSpec): Promise<void> {
    this.check('addRoute');
    if (this.table.has(r.dst)) throw new NetlinkError({ errno: 'EEXIST', op: 'addRoute', message: `a route to ${r.dst} already exists` });
    this.put(r);
  }

  async replaceRoute(r: RouteSpec): Promise<void> {
    this.check('replaceRoute');
    this.put(r);
  }

  async deleteRoute(r: { dst: string; protocol: number; via?: string; dev?: string }): Promise<boolean> {
    this.check('deleteRoute');
    const k = this.table.get(r.dst);
    if (!k || k.protocol !== r.protocol || (r.via !== undefined && k.via !== r.via) || (r.dev !== undefined && k.dev !== r.dev)) return false;
    this.table.delete(r.dst);
    this.onChange?.('delete', k);
    return true;
  }

  close(): void {
    this.closed = true;
  }

  private put(r: RouteSpec): void {
    if (this.devices && !this.devices.has(r.dev)) throw new NetlinkError({ errno: 'ENODEV', op: 'addRoute', link: r.dev, message: `interface ${r.dev} not found` });
    const k: KernelRoute = { family: r.dst.includes(':') ? 6 : 4, dst: r.dst, via: r.via, dev: r.dev, protocol: r.protocol, scope: 0 };
    this.table.set(r.dst, k);
    this.onChange?.('add', k);
  }

  private check(op: string): void {
    if (this.closed) throw new NetlinkError({ errno: 'EBADF', op, message: `${op}: the RouteOps was closed` });
  }
}
