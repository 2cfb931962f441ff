/**
 * Pure decoder of RTM_NEWROUTE messages (route dumps). Tolerant: unknown attributes are ignored.
 */
import { parseAttrs } from './decode.js';
import { readU32 } from './encode.js';
import {
  AF_INET,
  AF_INET6,
  RTA_DST,
  RTA_GATEWAY,
  RTA_OIF,
  RTA_PRIORITY,
  RTA_TABLE,
  RTA_VIA,
  RTMSG_LEN,
  formatAddrBytes,
} from './route-encode.js';

/** One route as the kernel reports it. */
export interface KernelRouteMessage {
  family: 4 | 6;
  /** CIDR of the destination ("0.0.0.0/0" / "::/0" for a default route). */
  dst: string;
  gateway?: string;
  oif?: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
  priority?: number;
  /** rtm_flags (RTM_F_CLONED etc.). */
  flags: number;
}

/** undefined for families other than IPv4/IPv6 (MPLS, multicast routing, …). */
export function decodeRouteMessage(body: Buffer): KernelRouteMessage | undefined {
  if (body.length < RTMSG_LEN) throw new Error(`short RTM_NEWROUTE message (${body.length} bytes)`);
  const fam = body[0];
  if (fam !== AF_INET && fam !== AF_INET6) return undefined;
  const family = fam === AF_INET ? 4 : 6;
  const len = family === 4 ? 4 : 16;
  const dstLen = body[1]!;
  const attrs = parseAttrs(body.subarray(RTMSG_LEN));
  const dstAttr = attrs.get(RTA_DST);
  const dstBytes = dstAttr?.length === len ? dstAttr : Buffer.alloc(len);
  const r: KernelRouteMessage = {
    family,
    dst: `${formatAddrBytes(dstBytes)}/${dstLen}`,
    table: body[4]!,
    protocol: body[5]!,
    scope: body[6]!,
    type: body[7]!,
    flags: readU32(body, 8),
  };
  const table = attrs.get(RTA_TABLE);
  if (table?.length === 4) r.table = readU32(table);
  const gw = attrs.get(RTA_GATEWAY);
  if (gw?.length === len) r.gateway = formatAddrBytes(gw);
  const via = attrs.get(RTA_VIA);
  if (!r.gateway && via && via.length >= 2) {
    const addr = via.subarray(2);
    if (addr.length === 4 || addr.length === 16) r.gateway = formatAddrBytes(addr);
  }
  const oif = attrs.get(RTA_OIF);
  if (oif?.length === 4) r.oif = readU32(oif);
  const prio = attrs.get(RTA_PRIORITY);
  if (prio?.length === 4) r.priority = readU32(prio);
  return r;
}
