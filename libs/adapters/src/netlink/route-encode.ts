/**
 * Pure rtnetlink route encoders (no socket). The layout follows iproute2 6.1's `ip route add|replace|del
 * PREFIX via GW dev DEV proto P` byte for byte (see test/e2e/netlink-routes.test.ts):
 *   nlmsghdr(16) rtmsg(12) RTA_DST RTA_GATEWAY RTA_OIF
 * - add:     NLM_F_REQUEST|ACK|CREATE|EXCL, table main, scope universe, type unicast;
 * - replace: NLM_F_REQUEST|ACK|CREATE|REPLACE, same body;
 * - delete:  NLM_F_REQUEST|ACK, type 0 (any), scope RT_SCOPE_NOWHERE for IPv4 (any) and 0 for IPv6, as iproute2 sends.
 * rtm_protocol is always set on a delete, so the kernel only deletes a route with that protocol.
 * Constants are from linux/rtnetlink.h and linux/socket.h.
 */
import { isIP } from 'node:net';

import { addrFromBytes, addrToBytes, formatAddr, tryParseAddr } from '@underlay/core';

import { NetlinkError } from './errors.js';
import { nlAttr, u32 } from './encode.js';

export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const NLM_F_REPLACE = 0x100;

export const AF_INET = 2;
export const AF_INET6 = 10;

export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_PRIORITY = 6;
export const RTA_TABLE = 15;
export const RTA_VIA = 18;

export const RT_TABLE_MAIN = 254;
export const RTN_UNICAST = 1;
export const RT_SCOPE_UNIVERSE = 0;
/** A route with no next hop (`ip route add DST dev DEV`): the destination is on the link. */
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_NOWHERE = 255;

/** struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type (u8 each), flags u32. */
export const RTMSG_LEN = 12;

export interface RtmsgFields {
  family: number;
  dstLen?: number;
  table?: number;
  protocol?: number;
  scope?: number;
  type?: number;
  flags?: number;
}

export function rtmsg(o: RtmsgFields): Buffer {
  const b = Buffer.alloc(RTMSG_LEN);
  b[0] = o.family;
  b[1] = o.dstLen ?? 0;
  // src_len, tos = 0
  b[4] = o.table ?? 0;
  b[5] = o.protocol ?? 0;
  b[6] = o.scope ?? 0;
  b[7] = o.type ?? 0;
  u32(o.flags ?? 0).copy(b, 8);
  return b;
}

/**
 * An address as the bytes netlink carries (network order), with its family. @underlay/core's parser (ipaddr.js,
 * four-part decimal IPv4 only) decides what is an address; node:net's isIP must agree, and a zone index
 * (fe80::1%eth0), which isIP accepts, is not part of the address netlink carries.
 */
export function addrBytes(op: string, s: string): { family: 4 | 6; bytes: Buffer } {
  const fam = typeof s === 'string' ? isIP(s) : 0;
  const a = fam === 0 ? undefined : tryParseAddr(fam === 6 ? s.replace(/%.*$/, '') : s);
  if (a && a.family === fam) return { family: a.family, bytes: Buffer.from(addrToBytes(a)) };
  throw new NetlinkError({ errno: 'EINVAL', op, message: `${op}: ${JSON.stringify(s)} is not an IP address` });
}

/**
 * Network-order bytes (4, or the first 16 of 16 or more) → text as @underlay/core prints it (IPv6 as RFC 5952
 * text from ipaddr.js). Throws a RangeError for another length.
 */
export function formatAddrBytes(b: Buffer): string {
  if (b.length !== 4 && b.length < 16) throw new RangeError(`an address is 4 or 16 bytes, not ${b.length}`);
  return formatAddr(addrFromBytes(b.length === 4 ? b : b.subarray(0, 16)));
}

/** "192.0.2.16/28" → family, prefix, network bytes. Refuses host bits (the kernel would too: EINVAL). */
export function parseRouteDst(op: string, dst: string): { family: 4 | 6; prefix: number; bytes: Buffer } {
  const slash = dst.indexOf('/');
  const addr = slash === -1 ? dst : dst.slice(0, slash);
  const { family, bytes } = addrBytes(op, addr);
  const max = family === 4 ? 32 : 128;
  const prefix = slash === -1 ? max : Number(dst.slice(slash + 1));
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (slash !== -1 && !/^\d+$/.test(dst.slice(slash + 1)))) {
    throw new NetlinkError({ errno: 'EINVAL', op, message: `${op}: bad prefix length in ${JSON.stringify(dst)}` });
  }
  for (let bit = prefix; bit < max; bit++) {
    if (bytes[bit >> 3]! & (0x80 >> (bit & 7))) {
      throw new NetlinkError({ errno: 'EINVAL', op, message: `${op}: ${dst} has host bits set (the route's destination must be a network)` });
    }
  }
  return { family, prefix, bytes };
}

export interface RouteBodyOptions {
  family: 4 | 6;
  dstLen: number;
  dst: Buffer;
  gateway?: Buffer;
  oif?: number;
  protocol: number;
  table?: number;
  /** Delete requests: type 0 and the "any" scope, like iproute2. */
  forDelete?: boolean;
}

/** RTM_NEWROUTE / RTM_DELROUTE body: rtmsg, RTA_DST, RTA_GATEWAY, RTA_OIF (iproute2's order). */
export function buildRouteBody(o: RouteBodyOptions): Buffer {
  const family = o.family === 4 ? AF_INET : AF_INET6;
  const table = o.table ?? RT_TABLE_MAIN;
  const head = rtmsg({
    family,
    dstLen: o.dstLen,
    table: table < 256 ? table : 0,
    protocol: o.protocol,
    // iproute2: a unicast route with no gateway is scope link.
    scope: o.forDelete ? (o.family === 4 ? RT_SCOPE_NOWHERE : RT_SCOPE_UNIVERSE) : o.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK,
    type: o.forDelete ? 0 : RTN_UNICAST,
  });
  const parts = [head];
  if (o.dstLen > 0 || o.dst.some((x) => x !== 0)) parts.push(nlAttr(RTA_DST, o.dst));
  if (table >= 256) parts.push(nlAttr(RTA_TABLE, u32(table)));
  if (o.gateway) parts.push(nlAttr(RTA_GATEWAY, o.gateway));
  if (o.oif !== undefined) parts.push(nlAttr(RTA_OIF, u32(o.oif)));
  return Buffer.concat(parts);
}

/** RTM_GETROUTE dump body: every route of every family (filtered by the caller). */
export function buildDumpRoutesBody(family = 0): Buffer {
  return rtmsg({ family });
}
