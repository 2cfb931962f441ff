export type {
  CreateDummyOptions,
  CreateIpvlanOptions,
  CreateMacvlanOptions,
  CreateVlanOptions,
  IpvlanFlag,
  IpvlanMode,
  LinkInfo,
  LinkOps,
  LinkOpsOptions,
  MacvlanMode,
} from './types.js';
export { NetlinkError } from './errors.js';
export { openLinkOps } from './link-ops.js';
export {
  buildDelLinkBody,
  buildDumpLinksBody,
  buildGetLinkBody,
  buildNewLinkBody,
  buildNlmsg,
  buildSetUpBody,
  encodeDummyInfo,
  encodeIpvlanInfo,
  encodeMacvlanInfo,
  encodeVlanInfo,
  formatMac,
  ifnameProblem,
  parseMac,
} from './encode.js';
export { decodeLinkMessage, parseAttrs, parseNlmsgs } from './decode.js';
export { openRouteOps } from './routes.js';
export type { KernelAddress, KernelRoute, RouteOps, RouteOpsOptions, RouteSpec } from './routes.js';
export { buildAddrBody, buildDumpAddrsBody, decodeAddrMessage } from './addr-encode.js';
export { addrBytes, buildDumpRoutesBody, buildRouteBody, formatAddrBytes, parseRouteDst } from './route-encode.js';
export { decodeRouteMessage } from './route-decode.js';
export type { KernelRouteMessage } from './route-decode.js';
