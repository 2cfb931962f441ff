/**
 * Pure rtnetlink encoders (no socket, no kernel). Attribute layout follows iproute2's
 * addattr_l()/addattr_nest() exactly, so the bytes can be compared with what `ip link add …` sends:
 *  - every attribute is padded to 4 bytes with zeros and a nest's length INCLUDES its children's padding;
 *  - NLA_F_NESTED is not set on IFLA_LINKINFO / IFLA_INFO_DATA;
 *  - IFLA_INFO_KIND is sent WITHOUT a trailing NUL, IFLA_IFNAME WITH one;
 *  - ipvlan always carries IFLA_IPVLAN_FLAGS (0 for 'bridge').
 * Numbers are in host byte order, as netlink requires (little-endian on x86_64/arm64).
 * Constants are from the kernel uapi headers linux/netlink.h, linux/rtnetlink.h, linux/if_link.h.
 */
import { endianness } from 'node:os';

import { NetlinkError } from './errors.js';
import type { IpvlanFlag, IpvlanMode, MacvlanMode } from './types.js';

// linux/netlink.h
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP = 0x300;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLA_TYPE_MASK = 0x3fff; // ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)

// linux/rtnetlink.h
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTEXT_FILTER_SKIP_STATS = 1 << 3;

// linux/if.h
export const IFF_UP = 0x1;
export const IFNAMSIZ = 16;

// linux/if_link.h
export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINK = 5;
export const IFLA_LINKINFO = 18;
export const IFLA_EXT_MASK = 29;
export const IFLA_LINK_NETNSID = 37;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const IFLA_VLAN_ID = 1;
export const IFLA_MACVLAN_MODE = 1;
export const IFLA_IPVLAN_MODE = 1;
export const IFLA_IPVLAN_FLAGS = 2;

/** struct ifinfomsg is 16 bytes: family u8, pad u8, type u16, index s32, flags u32, change u32. */
export const IFINFOMSG_LEN = 16;

export const MACVLAN_MODES: Readonly<Record<MacvlanMode, number>> = {
  private: 1, // MACVLAN_MODE_PRIVATE
  vepa: 2, // MACVLAN_MODE_VEPA
  bridge: 4, // MACVLAN_MODE_BRIDGE
  passthru: 8, // MACVLAN_MODE_PASSTHRU
};
export const IPVLAN_MODES: Readonly<Record<IpvlanMode, number>> = {
  l2: 0, // IPVLAN_MODE_L2
  l3: 1, // IPVLAN_MODE_L3
  l3s: 2, // IPVLAN_MODE_L3S
};
export const IPVLAN_FLAGS: Readonly<Record<IpvlanFlag, number>> = {
  bridge: 0, // no flag: ports talk to each other directly
  private: 0x01, // IPVLAN_F_PRIVATE
  vepa: 0x02, // IPVLAN_F_VEPA
};

const LE = endianness() === 'LE';

export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  if (LE) b.writeUInt16LE(v);
  else b.writeUInt16BE(v);
  return b;
}

export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  if (LE) b.writeUInt32LE(v >>> 0);
  else b.writeUInt32BE(v >>> 0);
  return b;
}

export function readU16(b: Buffer, off = 0): number {
  return LE ? b.readUInt16LE(off) : b.readUInt16BE(off);
}

export function readU32(b: Buffer, off = 0): number {
  return LE ? b.readUInt32LE(off) : b.readUInt32BE(off);
}

export function readS32(b: Buffer, off = 0): number {
  return LE ? b.readInt32LE(off) : b.readInt32BE(off);
}

const align4 = (n: number): number => (n + 3) & ~3;

/** One netlink attribute (struct nlattr + payload), zero-padded to a 4-byte boundary. */
export function nlAttr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  if (len > 0xffff) throw new RangeError(`netlink attribute ${type} too long (${len} bytes)`);
  const out = Buffer.alloc(align4(len));
  u16(len).copy(out, 0); // nla_len (without padding)
  u16(type).copy(out, 2); // nla_type, no NLA_F_NESTED / NLA_F_NET_BYTEORDER
  payload.copy(out, 4);
  return out;
}

/** A nested attribute: its length covers the (already padded) children, as iproute2's addattr_nest_end does. */
export function nlNest(type: number, children: Buffer[]): Buffer {
  return nlAttr(type, Buffer.concat(children));
}

/** NUL-terminated string payload (IFLA_IFNAME). */
export function cString(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.alloc(1)]);
}

/** String payload WITHOUT the NUL (IFLA_INFO_KIND, as iproute2 sends it; the kernel's NLA_STRING accepts both). */
export function rawString(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

/** struct nlmsghdr (16 bytes) + body: one complete netlink datagram. iproute2 also sends nlmsg_pid 0. */
export const NLMSG_HDRLEN = 16;
export function buildNlmsg(o: { type: number; flags: number; seq: number; body: Buffer; pid?: number }): Buffer {
  const len = NLMSG_HDRLEN + o.body.length;
  return Buffer.concat([u32(len), u16(o.type), u16(o.flags), u32(o.seq), u32(o.pid ?? 0), o.body]);
}

/** struct ifinfomsg with AF_UNSPEC and type 0. */
export function ifinfomsg(o: { index?: number; flags?: number; change?: number } = {}): Buffer {
  const b = Buffer.alloc(IFINFOMSG_LEN);
  // family (u8) = AF_UNSPEC, pad (u8), type (u16) = 0
  Buffer.concat([u32(o.index ?? 0), u32(o.flags ?? 0), u32(o.change ?? 0)]).copy(b, 4);
  return b;
}

// ---------------------------------------------------------------------------------------------
// IFLA_LINKINFO encoders. Each returns the COMPLETE IFLA_LINKINFO attribute (header included).
// ---------------------------------------------------------------------------------------------

function linkinfo(kind: string, data?: Buffer[]): Buffer {
  const children = [nlAttr(IFLA_INFO_KIND, rawString(kind))];
  if (data) children.push(nlNest(IFLA_INFO_DATA, data));
  return nlNest(IFLA_LINKINFO, children);
}

/** IFLA_LINKINFO { KIND "macvlan", DATA { IFLA_MACVLAN_MODE u32 } } */
export function encodeMacvlanInfo(mode: MacvlanMode): Buffer {
  const m = MACVLAN_MODES[mode];
  if (m === undefined) throw invalid('encodeMacvlanInfo', `unknown macvlan mode ${JSON.stringify(mode)}`);
  return linkinfo('macvlan', [nlAttr(IFLA_MACVLAN_MODE, u32(m))]);
}

/** IFLA_LINKINFO { KIND "ipvlan", DATA { IFLA_IPVLAN_MODE u16, IFLA_IPVLAN_FLAGS u16 } } */
export function encodeIpvlanInfo(mode: IpvlanMode, flag: IpvlanFlag = 'bridge'): Buffer {
  const m = IPVLAN_MODES[mode];
  if (m === undefined) throw invalid('encodeIpvlanInfo', `unknown ipvlan mode ${JSON.stringify(mode)}`);
  const f = IPVLAN_FLAGS[flag];
  if (f === undefined) throw invalid('encodeIpvlanInfo', `unknown ipvlan flag ${JSON.stringify(flag)}`);
  return linkinfo('ipvlan', [nlAttr(IFLA_IPVLAN_MODE, u16(m)), nlAttr(IFLA_IPVLAN_FLAGS, u16(f))]);
}

/** IFLA_LINKINFO { KIND "vlan", DATA { IFLA_VLAN_ID u16 } } (protocol left to the kernel default, 802.1Q). */
export function encodeVlanInfo(vlanId: number): Buffer {
  if (!Number.isInteger(vlanId) || vlanId < 0 || vlanId > 4094) {
    throw invalid('encodeVlanInfo', `VLAN id ${vlanId} is out of range 0..4094`);
  }
  return linkinfo('vlan', [nlAttr(IFLA_VLAN_ID, u16(vlanId))]);
}

/** IFLA_LINKINFO { KIND "dummy" } */
export function encodeDummyInfo(): Buffer {
  return linkinfo('dummy');
}

// ---------------------------------------------------------------------------------------------
// Whole request bodies (everything after the 16-byte nlmsghdr).
// ---------------------------------------------------------------------------------------------

/**
 * RTM_NEWLINK body for creating a link. Attribute order matches iproute2:
 * IFLA_ADDRESS, IFLA_LINK, IFLA_IFNAME, IFLA_LINKINFO. Send with NLM_F_REQUEST|ACK|CREATE|EXCL.
 */
export function buildNewLinkBody(o: {
  name: string;
  linkinfo: Buffer;
  parentIndex?: number;
  mac?: Buffer;
  up?: boolean;
}): Buffer {
  const parts = [ifinfomsg(o.up ? { flags: IFF_UP, change: IFF_UP } : {})];
  if (o.mac) parts.push(nlAttr(IFLA_ADDRESS, o.mac));
  if (o.parentIndex !== undefined) parts.push(nlAttr(IFLA_LINK, u32(o.parentIndex)));
  parts.push(nlAttr(IFLA_IFNAME, cString(o.name)));
  parts.push(o.linkinfo);
  return Buffer.concat(parts);
}

/** RTM_NEWLINK body (no CREATE flag) that sets IFF_UP on the link called `name`. */
export function buildSetUpBody(name: string): Buffer {
  return Buffer.concat([ifinfomsg({ flags: IFF_UP, change: IFF_UP }), nlAttr(IFLA_IFNAME, cString(name))]);
}

/** RTM_DELLINK body addressing the link by name. */
export function buildDelLinkBody(name: string): Buffer {
  return Buffer.concat([ifinfomsg(), nlAttr(IFLA_IFNAME, cString(name))]);
}

/** RTM_GETLINK body for one link, by name or by index; statistics are skipped. */
export function buildGetLinkBody(by: { name: string } | { index: number }): Buffer {
  const ext = nlAttr(IFLA_EXT_MASK, u32(RTEXT_FILTER_SKIP_STATS));
  if ('name' in by) return Buffer.concat([ifinfomsg(), ext, nlAttr(IFLA_IFNAME, cString(by.name))]);
  return Buffer.concat([ifinfomsg({ index: by.index }), ext]);
}

/** RTM_GETLINK body for a dump (send with NLM_F_REQUEST|NLM_F_DUMP). */
export function buildDumpLinksBody(): Buffer {
  return Buffer.concat([ifinfomsg(), nlAttr(IFLA_EXT_MASK, u32(RTEXT_FILTER_SKIP_STATS))]);
}

// ---------------------------------------------------------------------------------------------
// Validation helpers (pure).
// ---------------------------------------------------------------------------------------------

function invalid(op: string, message: string, link?: string): NetlinkError {
  return new NetlinkError({ errno: 'EINVAL', op, message, ...(link !== undefined ? { link } : {}) });
}

/**
 * Returns an error text when `name` is not a name the kernel accepts for a new interface
 * (dev_valid_name: 1..15 bytes, not "." / "..", no '/', ':' or whitespace), or uses '%'
 * (a kernel name template, which would make the created name unpredictable). undefined when valid.
 */
export function ifnameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'interface name must be a non-empty string';
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes >= IFNAMSIZ) return `interface name ${JSON.stringify(name)} is longer than ${IFNAMSIZ - 1} bytes`;
  if (name === '.' || name === '..') return `interface name ${JSON.stringify(name)} is not allowed`;
  if (/[/:%\s\0]/.test(name)) {
    return `interface name ${JSON.stringify(name)} contains a character that is not allowed ('/', ':', '%', NUL or whitespace)`;
  }
  return undefined;
}

export function checkIfname(op: string, name: unknown, what = 'interface'): string {
  const p = ifnameProblem(name);
  if (p) throw invalid(op, what === 'interface' ? p : `${what} ${p}`, typeof name === 'string' ? name : undefined);
  return name as string;
}

/** "aa:bb:cc:dd:ee:ff" -> 6 bytes; throws NetlinkError('EINVAL') for other formats or a multicast/zero address. */
export function parseMac(op: string, mac: string): Buffer {
  if (typeof mac !== 'string' || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) {
    throw invalid(op, `MAC address ${JSON.stringify(mac)} is not of the form aa:bb:cc:dd:ee:ff`);
  }
  const b = Buffer.from(mac.split(':').map((x) => parseInt(x, 16)));
  if ((b[0]! & 1) === 1) throw invalid(op, `MAC address ${mac} is a multicast address`);
  if (b.every((x) => x === 0)) throw invalid(op, `MAC address ${mac} is all zeros`);
  return b;
}

export function formatMac(b: Buffer): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
