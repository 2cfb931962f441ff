/**
 * RouteOps: IPv4/IPv6 routes of the main table over one rtnetlink socket (netlink@0.3.0's
 * RawNetlinkSocket), in the network namespace of the process that opened it. Requests are
 * serialized (one in flight), like LinkOps. The bytes match iproute2's `ip route add|replace|del
 * DST via GW dev DEV proto P` (test/e2e/netlink-routes.test.ts).
 *
 * A route is owned by its rtm_protocol: deleteRoute always names the protocol, so the kernel never
 * deletes a route with another one; addRoute uses NLM_F_EXCL, so it never overwrites any route.
 */
import { NetlinkChannel, kernelError } from './channel.js';
import { dumpLinks, lookupLink } from './link-ops.js';
import {
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  checkIfname,
} from './encode.js';
import { NetlinkError, errnoName } from './errors.js';
import { decodeRouteMessage } from './route-decode.js';
import { RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR, buildAddrBody, buildDumpAddrsBody, decodeAddrMessage, type KernelAddress } from './addr-encode.js';
import {
  NLM_F_REPLACE,
  RTM_DELROUTE,
  RTM_GETROUTE,
  RTM_NEWROUTE,
  RTN_UNICAST,
  RT_TABLE_MAIN,
  addrBytes,
  buildDumpRoutesBody,
  buildRouteBody,
  parseRouteDst,
} from './route-encode.js';

export type { KernelAddress } from './addr-encode.js';

const ENODEV = 19;
const ESRCH = 3;
const EADDRNOTAVAIL = 99;
const RTM_F_CLONED = 0x200;

/** A route to program: `dst via via dev dev proto protocol` in the main table (no `via`: `dst dev dev scope link`). */
export interface RouteSpec {
  /** CIDR (a bare address means a host route). */
  dst: string;
  /** Next hop; absent for a route straight onto the link. */
  via?: string;
  dev: string;
  protocol: number;
}

/** A unicast route of the main table, as the kernel lists it. */
export interface KernelRoute {
  family: 4 | 6;
  /** CIDR, normalised ("192.0.2.16/28", "2001:db8:1::10/124"). */
  dst: string;
  via?: string;
  /** Name of the outgoing interface (undefined when the route has none, or a multipath route). */
  dev?: string;
  oif?: number;
  protocol: number;
  priority?: number;
  scope: number;
}

export interface RouteOps {
  /** Unicast routes of the main table, IPv4 then IPv6 (only those with `protocol` when given). */
  listRoutes(filter?: { protocol?: number }): Promise<KernelRoute[]>;
  /** Adds a route; never replaces one (NetlinkError EEXIST when a route to dst exists, whatever its protocol). */
  addRoute(r: RouteSpec): Promise<void>;
  /** `ip route replace`: creates or overwrites the route to dst (any protocol: check listRoutes first). */
  replaceRoute(r: RouteSpec): Promise<void>;
  /** Deletes the route to dst with that protocol (and next hop/device when given); false when there is none. */
  deleteRoute(r: { dst: string; protocol: number; via?: string; dev?: string }): Promise<boolean>;
  /** The addresses of interface `dev` (none when it does not exist). */
  listAddresses(dev: string): Promise<KernelAddress[]>;
  /** `ip addr add ADDRESS/PLEN dev DEV` (IPv6 without DAD); NetlinkError EEXIST when it is there. */
  addAddress(a: { dev: string; cidr: string }): Promise<void>;
  /** `ip addr del`; false when the address or the interface is not there. */
  deleteAddress(a: { dev: string; cidr: string }): Promise<boolean>;
  /** Closes the socket; idempotent. Later calls reject with NetlinkError('EBADF'). */
  close(): void;
}

export interface RouteOpsOptions {
  /** Per-request timeout (default 10000 ms). */
  timeoutMs?: number;
}

class RtnlRouteOps implements RouteOps {
  private readonly chan: NetlinkChannel;
  /** name → ifindex, refreshed by every listRoutes and after ENODEV. */
  private readonly indexes = new Map<string, number>();

  constructor(opts: RouteOpsOptions) {
    this.chan = new NetlinkChannel({ owner: 'RouteOps', openOp: 'openRouteOps', timeoutMs: opts.timeoutMs, seq: ((Date.now() ^ 0x5a5a5a5a) & 0x7fffffff) >>> 0 });
  }

  async listRoutes(filter: { protocol?: number } = {}): Promise<KernelRoute[]> {
    const op = 'listRoutes';
    const names = await this.dumpLinks(op);
    const msgs = await this.chan.dump(op, RTM_GETROUTE, buildDumpRoutesBody(), 'cannot list routes');
    const out: KernelRoute[] = [];
    for (const m of msgs) {
      if (m.type !== RTM_NEWROUTE) continue;
      const r = decodeRouteMessage(m.body);
      if (!r || r.table !== RT_TABLE_MAIN || r.type !== RTN_UNICAST || r.flags & RTM_F_CLONED) continue;
      if (filter.protocol !== undefined && r.protocol !== filter.protocol) continue;
      const k: KernelRoute = { family: r.family, dst: r.dst, protocol: r.protocol, scope: r.scope };
      if (r.gateway !== undefined) k.via = r.gateway;
      if (r.oif !== undefined) {
        k.oif = r.oif;
        const n = names.get(r.oif);
        if (n !== undefined) k.dev = n;
      }
      if (r.priority !== undefined) k.priority = r.priority;
      out.push(k);
    }
    return out.sort((a, b) => a.family - b.family);
  }

  addRoute(r: RouteSpec): Promise<void> {
    return this.modify('addRoute', r, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  }

  replaceRoute(r: RouteSpec): Promise<void> {
    return this.modify('replaceRoute', r, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
  }

  async deleteRoute(r: { dst: string; protocol: number; via?: string; dev?: string }): Promise<boolean> {
    const op = 'deleteRoute';
    const dst = parseRouteDst(op, r.dst);
    const gw = r.via !== undefined ? addrBytes(op, r.via) : undefined;
    if (gw && gw.family !== dst.family) throw familyMismatch(op, r.dst, r.via!);
    checkProtocol(op, r.protocol);
    for (let attempt = 1; ; attempt++) {
      let oif: number | undefined;
      if (r.dev !== undefined) {
        oif = await this.ifindex(op, r.dev);
        if (oif === undefined) return false; // no such device: no route through it
      }
      const body = buildRouteBody({ family: dst.family, dstLen: dst.prefix, dst: dst.bytes, gateway: gw?.bytes, oif, protocol: r.protocol, forDelete: true });
      const rep = await this.chan.request(op, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, body);
      if (rep.errno === ESRCH) return false;
      if (rep.errno === ENODEV && r.dev !== undefined && attempt === 1) {
        this.indexes.delete(r.dev);
        continue;
      }
      if (rep.errno) throw kernelError(op, rep.errno, `cannot delete route ${r.dst}`);
      return true;
    }
  }

  async listAddresses(dev: string): Promise<KernelAddress[]> {
    const op = 'listAddresses';
    checkIfname(op, dev);
    this.indexes.delete(dev);
    const index = await this.ifindex(op, dev);
    if (index === undefined) return [];
    const msgs = await this.chan.dump(op, RTM_GETADDR, buildDumpAddrsBody(), 'cannot list addresses', 'the address list');
    const out: KernelAddress[] = [];
    for (const m of msgs) {
      if (m.type !== RTM_NEWADDR) continue;
      const a = decodeAddrMessage(m.body);
      if (a && a.index === index) out.push(a);
    }
    return out;
  }

  addAddress(a: { dev: string; cidr: string }): Promise<void> {
    return this.changeAddress('addAddress', a, RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).then(() => undefined);
  }

  deleteAddress(a: { dev: string; cidr: string }): Promise<boolean> {
    return this.changeAddress('deleteAddress', a, RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK);
  }

  close(): void {
    this.chan.close();
  }

  // ---- internals ---------------------------------------------------------------------------

  /** RTM_NEWADDR / RTM_DELADDR of `cidr` (an address with its prefix length) on `dev`; a delete of nothing is false. */
  private async changeAddress(op: string, a: { dev: string; cidr: string }, type: number, flags: number): Promise<boolean> {
    const slash = a.cidr.indexOf('/');
    const addr = addrBytes(op, slash === -1 ? a.cidr : a.cidr.slice(0, slash));
    const max = addr.family === 4 ? 32 : 128;
    const prefixLen = slash === -1 ? max : Number(a.cidr.slice(slash + 1));
    if (!/^\d+$/.test(slash === -1 ? String(max) : a.cidr.slice(slash + 1)) || prefixLen > max) {
      throw new NetlinkError({ errno: 'EINVAL', op, message: `${op}: bad prefix length in ${JSON.stringify(a.cidr)}` });
    }
    checkIfname(op, a.dev);
    const what = `cannot ${type === RTM_NEWADDR ? 'add' : 'delete'} address ${a.cidr} ${type === RTM_NEWADDR ? 'to' : 'of'} ${a.dev}`;
    for (let attempt = 1; ; attempt++) {
      const index = await this.ifindex(op, a.dev);
      if (index === undefined) {
        if (type === RTM_DELADDR) return false;
        throw new NetlinkError({ errno: 'ENODEV', op, link: a.dev, message: `${what}: interface ${a.dev} not found` });
      }
      const rep = await this.chan.request(op, type, flags, buildAddrBody({ family: addr.family, prefixLen, address: addr.bytes, index }));
      if (rep.errno === ENODEV && attempt === 1) {
        this.indexes.delete(a.dev);
        continue;
      }
      if (type === RTM_DELADDR && (rep.errno === EADDRNOTAVAIL || rep.errno === ENODEV)) return false;
      if (rep.errno) throw kernelError(op, rep.errno, what, a.dev);
      return true;
    }
  }

  private async modify(op: string, r: RouteSpec, flags: number): Promise<void> {
    const dst = parseRouteDst(op, r.dst);
    const gw = r.via !== undefined ? addrBytes(op, r.via) : undefined;
    if (gw && gw.family !== dst.family) throw familyMismatch(op, r.dst, r.via!);
    checkProtocol(op, r.protocol);
    checkIfname(op, r.dev);
    const what = `cannot ${op === 'addRoute' ? 'add' : 'replace'} route ${r.dst}${r.via !== undefined ? ` via ${r.via}` : ''} dev ${r.dev}`;
    for (let attempt = 1; ; attempt++) {
      const oif = await this.ifindex(op, r.dev);
      if (oif === undefined) throw new NetlinkError({ errno: 'ENODEV', op, link: r.dev, message: `${what}: interface ${r.dev} not found` });
      const body = buildRouteBody({ family: dst.family, dstLen: dst.prefix, dst: dst.bytes, gateway: gw?.bytes, oif, protocol: r.protocol });
      const rep = await this.chan.request(op, RTM_NEWROUTE, flags, body);
      if (rep.errno === ENODEV && attempt === 1) {
        this.indexes.delete(r.dev); // the link was re-created with a new index
        continue;
      }
      if (rep.errno) {
        const e = errnoName(rep.errno);
        let detail: string | undefined;
        if (e === 'EEXIST') detail = `${what}: a route to ${r.dst} already exists`;
        else if (e === 'ENETUNREACH') detail = `${what}: ${r.via} is not reachable through ${r.dev} (no connected route on it)`;
        else if (e === 'ENETDOWN') detail = `${what}: ${r.dev} is down`;
        throw kernelError(op, rep.errno, what, r.dev, detail);
      }
      return;
    }
  }

  private async ifindex(op: string, name: string): Promise<number | undefined> {
    const cached = this.indexes.get(name);
    if (cached !== undefined) return cached;
    checkIfname(op, name);
    const link = await lookupLink(this.chan, op, name);
    if (link) this.indexes.set(name, link.index);
    return link?.index;
  }

  private async dumpLinks(op: string): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    this.indexes.clear();
    for (const l of await dumpLinks(this.chan, op)) {
      out.set(l.index, l.name);
      this.indexes.set(l.name, l.index);
    }
    return out;
  }
}

function checkProtocol(op: string, p: number): void {
  if (!Number.isInteger(p) || p < 1 || p > 255) {
    throw new NetlinkError({ errno: 'EINVAL', op, message: `${op}: routing protocol ${p} is not in 1..255` });
  }
}

function familyMismatch(op: string, dst: string, via: string): NetlinkError {
  return new NetlinkError({ errno: 'EINVAL', op, message: `${op}: next hop ${via} is not of the family of ${dst}` });
}

/** Opens one rtnetlink socket in the CURRENT process' network namespace. Synchronous; close() when done. */
export function openRouteOps(opts: RouteOpsOptions = {}): RouteOps {
  return new RtnlRouteOps(opts);
}
