/**
 * Pure rtnetlink address encoders and decoder (no socket): `ip addr add|del ADDR/PLEN dev DEV` as iproute2 sends it,
 *   nlmsghdr(16) ifaddrmsg(8) IFA_LOCAL IFA_ADDRESS [IFA_FLAGS]
 * and RTM_NEWADDR messages of a dump. Constants are from linux/if_addr.h and linux/rtnetlink.h.
 */
import { parseAttrs } from './decode.js';
import { nlAttr, readU32, u32 } from './encode.js';
import { AF_INET, AF_INET6, formatAddrBytes } from './route-encode.js';

export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;
export const IFA_FLAGS = 8;
/** No duplicate address detection (IPv6): the address is usable at once. */
export const IFA_F_NODAD = 0x02;
export const IFADDRMSG_LEN = 8;

/** struct ifaddrmsg: family, prefixlen, flags, scope (u8 each), index (u32). */
export function ifaddrmsg(o: { family: number; prefixLen?: number; flags?: number; scope?: number; index?: number }): Buffer {
  const b = Buffer.alloc(IFADDRMSG_LEN);
  b[0] = o.family;
  b[1] = o.prefixLen ?? 0;
  b[2] = o.flags ?? 0;
  b[3] = o.scope ?? 0;
  u32(o.index ?? 0).copy(b, 4);
  return b;
}

/** RTM_NEWADDR / RTM_DELADDR body for one address on one interface (IPv6 without DAD). */
export function buildAddrBody(o: { family: 4 | 6; prefixLen: number; address: Buffer; index: number }): Buffer {
  const family = o.family === 4 ? AF_INET : AF_INET6;
  const flags = o.family === 6 ? IFA_F_NODAD : 0;
  const parts = [ifaddrmsg({ family, prefixLen: o.prefixLen, flags, index: o.index }), nlAttr(IFA_LOCAL, o.address), nlAttr(IFA_ADDRESS, o.address)];
  if (flags) parts.push(nlAttr(IFA_FLAGS, u32(flags)));
  return Buffer.concat(parts);
}

/** RTM_GETADDR dump body: every address of every family (filtered by the caller). */
export function buildDumpAddrsBody(): Buffer {
  return ifaddrmsg({ family: 0 });
}

/** One address as the kernel lists it. */
export interface KernelAddress {
  family: 4 | 6;
  /** The interface's index. */
  index: number;
  /** The address (no prefix length). */
  address: string;
  prefixLen: number;
}

/** undefined for other families. */
export function decodeAddrMessage(body: Buffer): KernelAddress | undefined {
  if (body.length < IFADDRMSG_LEN) throw new Error(`short RTM_NEWADDR message (${body.length} bytes)`);
  const fam = body[0];
  if (fam !== AF_INET && fam !== AF_INET6) return undefined;
  const attrs = parseAttrs(body.subarray(IFADDRMSG_LEN));
  const raw = attrs.get(IFA_LOCAL) ?? attrs.get(IFA_ADDRESS);
  if (!raw) return undefined;
  return { family: fam === AF_INET ? 4 : 6, index: readU32(body, 4), address: formatAddrBytes(raw), prefixLen: body[1]! };
}
