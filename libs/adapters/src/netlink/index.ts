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
