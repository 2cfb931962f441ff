/**
 * LinkOps over one rtnetlink socket (a NetlinkChannel on netlink@0.3.0's RawNetlinkSocket; framing,
 * encoding and decoding are done here so the bytes match iproute2's).
 *
 * - The socket acts on the network namespace of the process that called openLinkOps().
 * - Requests are serialized (one in flight per LinkOps): see channel.ts.
 * - The socket does not keep the event loop alive while idle.
 */
import { NetlinkChannel, kernelError, type Reply } from './channel.js';
import { decodeLinkMessage } from './decode.js';
import {
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWLINK,
  buildDelLinkBody,
  buildDumpLinksBody,
  buildGetLinkBody,
  buildNewLinkBody,
  buildSetUpBody,
  checkIfname,
  encodeDummyInfo,
  encodeIpvlanInfo,
  encodeMacvlanInfo,
  encodeVlanInfo,
  parseMac,
} from './encode.js';
import { NetlinkError, errnoName } from './errors.js';
import type {
  CreateDummyOptions,
  CreateIpvlanOptions,
  CreateMacvlanOptions,
  CreateVlanOptions,
  LinkInfo,
  LinkOps,
  LinkOpsOptions,
} from './types.js';

const ENODEV = 19;

class RtnlLinkOps implements LinkOps {
  private readonly chan: NetlinkChannel;

  constructor(opts: LinkOpsOptions) {
    this.chan = new NetlinkChannel({ owner: 'LinkOps', openOp: 'openLinkOps', timeoutMs: opts.timeoutMs, seq: (Date.now() & 0x7fffffff) >>> 0 });
  }

  // ---- public API --------------------------------------------------------------------------

  async getLink(name: string): Promise<LinkInfo | undefined> {
    checkIfname('getLink', name);
    return this.lookupByName('getLink', name);
  }

  async getLinkByIndex(index: number): Promise<LinkInfo | undefined> {
    const op = 'getLinkByIndex';
    if (!Number.isInteger(index) || index <= 0 || index > 0x7fffffff) {
      throw new NetlinkError({ errno: 'EINVAL', op, message: `interface index ${index} is not a positive integer` });
    }
    const r = await this.chan.request(op, RTM_GETLINK, NLM_F_REQUEST, buildGetLinkBody({ index }));
    if (r.errno === ENODEV) return undefined;
    if (r.errno) throw kernelError(op, r.errno, `cannot look up interface #${index}`, `#${index}`);
    return firstLink(op, r, `#${index}`);
  }

  async listLinks(): Promise<LinkInfo[]> {
    return (await dumpLinks(this.chan, 'listLinks')).sort((a, b) => a.index - b.index);
  }

  createMacvlan(o: CreateMacvlanOptions): Promise<LinkInfo> {
    const op = 'createMacvlan';
    return this.create(op, 'macvlan', o.name, o.parent, o.up, () => ({
      linkinfo: encodeMacvlanInfo(o.mode),
      ...(o.mac !== undefined ? { mac: parseMac(op, o.mac) } : {}),
    }));
  }

  createIpvlan(o: CreateIpvlanOptions): Promise<LinkInfo> {
    return this.create('createIpvlan', 'ipvlan', o.name, o.parent, o.up, () => ({
      linkinfo: encodeIpvlanInfo(o.mode, o.flag ?? 'bridge'),
    }));
  }

  createVlan(o: CreateVlanOptions): Promise<LinkInfo> {
    return this.create('createVlan', 'vlan', o.name, o.parent, o.up, () => ({ linkinfo: encodeVlanInfo(o.vlanId) }));
  }

  createDummy(o: CreateDummyOptions): Promise<LinkInfo> {
    return this.create('createDummy', 'dummy', o.name, undefined, o.up, () => ({ linkinfo: encodeDummyInfo() }));
  }

  async setUp(name: string): Promise<void> {
    const op = 'setUp';
    checkIfname(op, name);
    const r = await this.chan.request(op, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, buildSetUpBody(name));
    if (r.errno === ENODEV) {
      throw kernelError(op, r.errno, `cannot bring interface ${name} up`, name, `interface ${name} not found`);
    }
    if (r.errno) throw kernelError(op, r.errno, `cannot bring interface ${name} up`, name);
  }

  async deleteLink(name: string): Promise<boolean> {
    const op = 'deleteLink';
    checkIfname(op, name);
    const r = await this.chan.request(op, RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, buildDelLinkBody(name));
    if (r.errno === ENODEV) return false;
    if (r.errno) throw kernelError(op, r.errno, `cannot delete interface ${name}`, name);
    return true;
  }

  close(): void {
    this.chan.close();
  }

  // ---- internals ---------------------------------------------------------------------------

  private lookupByName(op: string, name: string): Promise<LinkInfo | undefined> {
    return lookupLink(this.chan, op, name);
  }

  private async create(
    op: string,
    kind: string,
    name: string,
    parent: string | undefined,
    up: boolean | undefined,
    encode: () => { linkinfo: Buffer; mac?: Buffer },
  ): Promise<LinkInfo> {
    checkIfname(op, name);
    if (parent !== undefined) checkIfname(op, parent, 'parent');
    const what = `cannot create ${kind} ${name}`;
    const enc = encode(); // validates modes / ids / MAC before anything touches the kernel
    let parentIndex: number | undefined;
    if (parent !== undefined) {
      const p = await this.lookupByName(op, parent);
      if (!p) throw new NetlinkError({ errno: 'ENODEV', op, link: name, message: `${what}: parent interface ${parent} not found` });
      parentIndex = p.index;
    }
    const body = buildNewLinkBody({
      name,
      linkinfo: enc.linkinfo,
      ...(parentIndex !== undefined ? { parentIndex } : {}),
      ...(enc.mac ? { mac: enc.mac } : {}),
      up: up === true,
    });
    const r = await this.chan.request(op, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body);
    if (r.errno) {
      const e = errnoName(r.errno);
      let detail: string | undefined;
      if (e === 'EEXIST') detail = `interface ${name} already exists`;
      else if (e === 'ENODEV' && parent !== undefined) detail = `parent interface ${parent} not found`;
      else if (e === 'ENOTSUP' || e === 'EOPNOTSUPP') {
        detail = `this kernel does not support link type "${kind}" (is the ${kind === 'vlan' ? '8021q' : kind} module available?)`;
      }
      throw kernelError(op, r.errno, parent !== undefined ? `${what} on ${parent}` : what, name, detail && `${what}: ${detail}`);
    }
    const created = await this.lookupByName(op, name);
    if (!created) {
      throw new NetlinkError({ errno: 'ENODEV', op, link: name, message: `${what}: it disappeared right after it was created` });
    }
    return created;
  }
}

/** A link by name on the channel (RTM_GETLINK); undefined when there is none (ENODEV). Shared with the route ops. */
export async function lookupLink(chan: NetlinkChannel, op: string, name: string): Promise<LinkInfo | undefined> {
  const r = await chan.request(op, RTM_GETLINK, NLM_F_REQUEST, buildGetLinkBody({ name }));
  if (r.errno === ENODEV) return undefined;
  if (r.errno) throw kernelError(op, r.errno, `cannot look up interface ${name}`, name);
  return firstLink(op, r, name);
}

/** Every link on the channel (an RTM_GETLINK dump), in the kernel's order. Shared with the route ops. */
export async function dumpLinks(chan: NetlinkChannel, op: string): Promise<LinkInfo[]> {
  const msgs = await chan.dump(op, RTM_GETLINK, buildDumpLinksBody(), 'cannot list interfaces', 'the link table');
  return msgs.filter((m) => m.type === RTM_NEWLINK).map((m) => decodeLinkMessage(m.body));
}

function firstLink(op: string, r: Reply, what: string): LinkInfo {
  const m = r.msgs.find((x) => x.type === RTM_NEWLINK);
  if (!m) throw new NetlinkError({ errno: 'EPROTO', op, link: what, message: `${op}: the kernel sent no link message for ${what}` });
  return decodeLinkMessage(m.body);
}

/**
 * Opens one rtnetlink socket in the CURRENT process' network namespace and returns the LinkOps
 * bound to it. Synchronous. Call close() when done (it is idempotent). Throws NetlinkError when
 * the socket cannot be opened.
 */
export function openLinkOps(opts: LinkOpsOptions = {}): LinkOps {
  return new RtnlLinkOps(opts);
}
