/**
 * An in-memory routing table with the RouteOps contract (EEXIST on add, protocol-matched delete):
 * for unit tests and for the simulated agents of bench/routes.js. Not a kernel: say so wherever used.
 */
import { NetlinkError, type KernelAddress, type KernelRoute, type RouteOps, type RouteSpec } from '@underlay/adapters';

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

  /** Addresses per device: `address/prefixLen` texts. */
  readonly addresses = new Map<string, Set<string>>();

  async listAddresses(dev: string): Promise<KernelAddress[]> {
    this.check('listAddresses');
    return [...(this.addresses.get(dev) ?? [])].map((c) => {
      const [address, len] = c.split('/') as [string, string];
      return { family: address.includes(':') ? 6 : 4, index: 0, address, prefixLen: Number(len) };
    });
  }

  async addAddress(a: { dev: string; cidr: string }): Promise<void> {
    this.check('addAddress');
    if (this.devices && !this.devices.has(a.dev)) throw new NetlinkError({ errno: 'ENODEV', op: 'addAddress', link: a.dev, message: `interface ${a.dev} not found` });
    const set = this.addresses.get(a.dev) ?? new Set<string>();
    if (set.has(a.cidr)) throw new NetlinkError({ errno: 'EEXIST', op: 'addAddress', message: `${a.cidr} is already on ${a.dev}` });
    set.add(a.cidr);
    this.addresses.set(a.dev, set);
  }

  async deleteAddress(a: { dev: string; cidr: string }): Promise<boolean> {
    this.check('deleteAddress');
    return this.addresses.get(a.dev)?.delete(a.cidr) ?? false;
  }

  /** A device went (with its addresses and routes), as the kernel does when a link is deleted. */
  dropDevice(dev: string): void {
    this.addresses.delete(dev);
    for (const [dst, r] of this.table) if (r.dev === dev) this.table.delete(dst);
  }

  close(): void {
    this.closed = true;
  }

  private put(r: RouteSpec): void {
    if (this.devices && !this.devices.has(r.dev)) throw new NetlinkError({ errno: 'ENODEV', op: 'addRoute', link: r.dev, message: `interface ${r.dev} not found` });
    const k: KernelRoute = { family: r.dst.includes(':') ? 6 : 4, dst: r.dst, ...(r.via !== undefined ? { via: r.via } : {}), dev: r.dev, protocol: r.protocol, scope: r.via !== undefined ? 0 : 253 };
    this.table.set(r.dst, k);
    this.onChange?.('add', k);
  }

  private check(op: string): void {
    if (this.closed) throw new NetlinkError({ errno: 'EBADF', op, message: `${op}: the RouteOps was closed` });
  }
}
