/**
 * Pure rtnetlink decoders: RTM_NEWLINK replies -> LinkInfo, NLMSG_ERROR -> errno.
 * Tolerant by design: unknown attributes are ignored, malformed optional attributes are skipped.
 */
import {
  IFF_UP,
  IFINFOMSG_LEN,
  IFLA_ADDRESS,
  IFLA_IFNAME,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_IPVLAN_FLAGS,
  IFLA_IPVLAN_MODE,
  IFLA_LINK,
  IFLA_LINK_NETNSID,
  IFLA_LINKINFO,
  IFLA_MACVLAN_MODE,
  IFLA_MTU,
  IFLA_VLAN_ID,
  IPVLAN_FLAGS,
  IPVLAN_MODES,
  MACVLAN_MODES,
  NLA_TYPE_MASK,
  NLMSG_HDRLEN,
  formatMac,
  readS32,
  readU16,
  readU32,
} from './encode.js';
import type { IpvlanFlag, IpvlanMode, LinkInfo, MacvlanMode } from './types.js';

export interface Nlmsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  body: Buffer;
}

/** Splits a received datagram into netlink messages (struct nlmsghdr + body), honouring NLMSG_ALIGN. */
export function parseNlmsgs(buf: Buffer): Nlmsg[] {
  const out: Nlmsg[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = readU32(buf, off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) throw new Error(`malformed netlink message (nlmsg_len ${len})`);
    out.push({
      type: readU16(buf, off + 4),
      flags: readU16(buf, off + 6),
      seq: readU32(buf, off + 8),
      pid: readU32(buf, off + 12),
      body: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += (len + 3) & ~3;
  }
  return out;
}

/** Splits an attribute stream into type -> payload (flags masked off; a repeated type keeps the first). */
export function parseAttrs(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = readU16(buf, off);
    const type = readU16(buf, off + 2) & NLA_TYPE_MASK;
    if (len < 4 || off + len > buf.length) break; // truncated / malformed: stop, keep what we have
    if (!out.has(type)) out.set(type, buf.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}

function str(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.toString('utf8', 0, nul === -1 ? b.length : nul);
}

function reverse<K extends string>(m: Readonly<Record<K, number>>): Map<number, K> {
  return new Map(Object.entries(m).map(([k, v]) => [v as number, k as K]));
}
const MACVLAN_BY_NUM = reverse<MacvlanMode>(MACVLAN_MODES);
const IPVLAN_BY_NUM = reverse<IpvlanMode>(IPVLAN_MODES);
const IPVLAN_FLAG_BY_NUM = reverse<IpvlanFlag>(IPVLAN_FLAGS);

/** Decodes an RTM_NEWLINK message body (struct ifinfomsg + IFLA_* attributes). */
export function decodeLinkMessage(body: Buffer): LinkInfo {
  if (body.length < IFINFOMSG_LEN) throw new Error(`short RTM_NEWLINK message (${body.length} bytes)`);
  const index = readS32(body, 4);
  const flags = readU32(body, 8);
  const attrs = parseAttrs(body.subarray(IFINFOMSG_LEN));
  const nameAttr = attrs.get(IFLA_IFNAME);
  const info: LinkInfo = { index, name: nameAttr ? str(nameAttr) : '', up: (flags & IFF_UP) !== 0 };

  const mtu = attrs.get(IFLA_MTU);
  if (mtu?.length === 4) info.mtu = readU32(mtu);
  const addr = attrs.get(IFLA_ADDRESS);
  if (addr?.length === 6) info.mac = formatMac(addr);
  const link = attrs.get(IFLA_LINK);
  if (link?.length === 4) info.parentIndex = readU32(link);
  const netnsid = attrs.get(IFLA_LINK_NETNSID);
  if (netnsid?.length === 4) info.parentNetnsId = readS32(netnsid);

  const linkinfo = attrs.get(IFLA_LINKINFO);
  if (linkinfo) {
    const li = parseAttrs(linkinfo);
    const kind = li.get(IFLA_INFO_KIND);
    if (kind) info.kind = str(kind);
    const data = li.get(IFLA_INFO_DATA);
    if (data && info.kind) decodeInfoData(info, info.kind, parseAttrs(data));
  }
  return info;
}

function decodeInfoData(info: LinkInfo, kind: string, d: Map<number, Buffer>): void {
  if (kind === 'vlan') {
    const id = d.get(IFLA_VLAN_ID);
    if (id?.length === 2) info.vlanId = readU16(id);
  } else if (kind === 'macvlan') {
    const mode = d.get(IFLA_MACVLAN_MODE);
    const m = mode?.length === 4 ? MACVLAN_BY_NUM.get(readU32(mode)) : undefined;
    if (m) info.macvlanMode = m;
  } else if (kind === 'ipvlan') {
    const mode = d.get(IFLA_IPVLAN_MODE);
    const m = mode?.length === 2 ? IPVLAN_BY_NUM.get(readU16(mode)) : undefined;
    if (m) info.ipvlanMode = m;
    const fl = d.get(IFLA_IPVLAN_FLAGS);
    const f = fl?.length === 2 ? IPVLAN_FLAG_BY_NUM.get(readU16(fl)) : undefined;
    if (f) info.ipvlanFlag = f;
  }
}

/** NLMSG_ERROR body -> positive errno (0 means ACK). */
export function decodeErrorMessage(body: Buffer): number {
  if (body.length < 4) throw new Error(`short NLMSG_ERROR message (${body.length} bytes)`);
  return -readS32(body, 0);
}
