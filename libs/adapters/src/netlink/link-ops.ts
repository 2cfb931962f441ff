/**
 * LinkOps over one rtnetlink socket (netlink@0.3.0's RawNetlinkSocket; framing, encoding and
 * decoding are done here so the bytes match iproute2's).
 *
 * - The socket acts on the network namespace of the process that called openLinkOps().
 * - Requests are serialized (one in flight per LinkOps): the kernel refuses a second dump on a
 *   socket that is still dumping (EBUSY), and one-at-a-time keeps replies trivially matched.
 * - The socket does not keep the event loop alive while idle.
 */
import { Protocol, RawNetlinkSocket, type MessageInfo } from 'netlink';

import { decodeErrorMessage, decodeLinkMessage, parseNlmsgs, type Nlmsg } from './decode.js';
import {
  NLMSG_DONE,
  NLMSG_ERROR,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_EXCL,
  NLM_F_MULTI,
  NLM_F_REQUEST,
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWLINK,
  buildDelLinkBody,
  buildDumpLinksBody,
  buildGetLinkBody,
  buildNewLinkBody,
  buildNlmsg,
  buildSetUpBody,
  checkIfname,
  encodeDummyInfo,
  encodeIpvlanInfo,
  encodeMacvlanInfo,
  encodeVlanInfo,
  parseMac,
  readS32,
} from './encode.js';
import { NetlinkError, describeErrno, errnoName } from './errors.js';
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
const DEFAULT_TIMEOUT_MS = 10_000;
const DUMP_RETRIES = 5;

interface Reply {
  /** 0 on success, else the positive errno the kernel returned. */
  errno: number;
  /** Data messages of the reply (no NLMSG_ERROR / NLMSG_DONE). */
  msgs: Nlmsg[];
  /** NLM_F_DUMP_INTR was set: the dump may be inconsistent and should be retried. */
  interrupted: boolean;
}

interface Pending {
  seq: number;
  msgs: Nlmsg[];
  interrupted: boolean;
  timer: NodeJS.Timeout;
  resolve(r: Reply): void;
  reject(e: Error): void;
}

class RtnlLinkOps implements LinkOps {
  private sock: RawNetlinkSocket | undefined;
  private readonly timeoutMs: number;
  private seq: number;
  private pending: Pending | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(opts: LinkOpsOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.seq = (Date.now() & 0x7fffffff) >>> 0;
    let sock: RawNetlinkSocket;
    try {
      sock = new RawNetlinkSocket(Protocol.ROUTE);
    } catch (e) {
      throw fromSystemError('openLinkOps', 'cannot open an rtnetlink socket', e);
    }
    sock.unref(); // idle sockets must not keep the process alive; ref()'d while a request waits
    sock.on('message', (buf: Buffer, rinfo: MessageInfo) => this.onDatagram(buf, rinfo));
    sock.on('truncatedMessage', () =>
      this.failPending(new NetlinkError({ errno: 'EMSGSIZE', op: 'recv', message: 'netlink reply was truncated' })),
    );
    sock.on('error', (err: unknown) => this.failPending(fromSystemError('socket', 'netlink socket error', err)));
    this.sock = sock;
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
    const r = await this.request(op, RTM_GETLINK, NLM_F_REQUEST, buildGetLinkBody({ index }));
    if (r.errno === ENODEV) return undefined;
    if (r.errno) throw kernelError(op, r.errno, `cannot look up interface #${index}`, `#${index}`);
    return firstLink(op, r, `#${index}`);
  }

  async listLinks(): Promise<LinkInfo[]> {
    const op = 'listLinks';
    for (let attempt = 1; ; attempt++) {
      const r = await this.request(op, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, buildDumpLinksBody());
      if (r.errno) throw kernelError(op, r.errno, 'cannot list interfaces');
      if (r.interrupted && attempt < DUMP_RETRIES) continue;
      if (r.interrupted) {
        throw new NetlinkError({
          errno: 'EINTR',
          op,
          message: `cannot list interfaces: the link table kept changing during ${DUMP_RETRIES} dumps`,
        });
      }
      return r.msgs
        .filter((m) => m.type === RTM_NEWLINK)
        .map((m) => decodeLinkMessage(m.body))
        .sort((a, b) => a.index - b.index);
    }
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
    const r = await this.request(op, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, buildSetUpBody(name));
    if (r.errno === ENODEV) {
      throw kernelError(op, r.errno, `cannot bring interface ${name} up`, name, `interface ${name} not found`);
    }
    if (r.errno) throw kernelError(op, r.errno, `cannot bring interface ${name} up`, name);
  }

  async deleteLink(name: string): Promise<boolean> {
    const op = 'deleteLink';
    checkIfname(op, name);
    const r = await this.request(op, RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, buildDelLinkBody(name));
    if (r.errno === ENODEV) return false;
    if (r.errno) throw kernelError(op, r.errno, `cannot delete interface ${name}`, name);
    return true;
  }

  close(): void {
    const sock = this.sock;
    if (!sock) return;
    this.sock = undefined;
    this.failPending(new NetlinkError({ errno: 'EBADF', op: 'close', message: 'netlink socket was closed while a request was in flight' }));
    try {
      sock.close();
    } catch {
      // already closed natively; nothing left to release
    }
  }

  // ---- internals ---------------------------------------------------------------------------

  private async lookupByName(op: string, name: string): Promise<LinkInfo | undefined> {
    const r = await this.request(op, RTM_GETLINK, NLM_F_REQUEST, buildGetLinkBody({ name }));
    if (r.errno === ENODEV) return undefined;
    if (r.errno) throw kernelError(op, r.errno, `cannot look up interface ${name}`, name);
    return firstLink(op, r, name);
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
    const r = await this.request(op, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body);
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

  /** Serializes requests: each waits for the previous one to settle. */
  private request(op: string, type: number, flags: number, body: Buffer): Promise<Reply> {
    const run = (): Promise<Reply> => this.exchange(op, type, flags, body);
    const p = this.tail.then(run, run);
    this.tail = p.catch(() => undefined);
    return p;
  }

  private exchange(op: string, type: number, flags: number, body: Buffer): Promise<Reply> {
    const sock = this.sock;
    if (!sock) return Promise.reject(new NetlinkError({ errno: 'EBADF', op, message: `${op}: the LinkOps was closed` }));
    this.seq = (this.seq % 0xffffffff) + 1;
    const seq = this.seq;
    return new Promise<Reply>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.pending?.seq === seq) this.pending = undefined;
        this.sock?.unref();
      };
      const timer = setTimeout(
        () => this.failPending(new NetlinkError({ errno: 'ETIMEDOUT', op, message: `${op}: no reply from the kernel within ${this.timeoutMs} ms` })),
        this.timeoutMs,
      );
      this.pending = {
        seq,
        msgs: [],
        interrupted: false,
        timer,
        resolve: (r) => {
          done();
          resolve(r);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
      sock.ref();
      try {
        sock.send(buildNlmsg({ type, flags, seq, body }), { port: 0 }, (err) => {
          if (err && this.pending?.seq === seq) this.failPending(fromSystemError(op, `${op}: sending the netlink request failed`, err));
        });
      } catch (e) {
        this.failPending(fromSystemError(op, `${op}: sending the netlink request failed`, e));
      }
    });
  }

  private failPending(err: Error): void {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    p.reject(err);
  }

  private onDatagram(buf: Buffer, rinfo: MessageInfo): void {
    if (rinfo.port !== 0) return; // only the kernel talks to us
    const p = this.pending;
    if (!p) return;
    let msgs: Nlmsg[];
    try {
      msgs = parseNlmsgs(buf);
    } catch (e) {
      this.failPending(new NetlinkError({ errno: 'EPROTO', op: 'recv', message: `undecodable netlink reply: ${(e as Error).message}` }));
      return;
    }
    for (const m of msgs) {
      if (m.seq !== p.seq || this.pending !== p) continue; // stale reply of a timed-out request
      if (m.flags & NLM_F_DUMP_INTR) p.interrupted = true;
      if (m.type === NLMSG_ERROR) {
        let errno: number;
        try {
          errno = decodeErrorMessage(m.body);
        } catch (e) {
          this.failPending(new NetlinkError({ errno: 'EPROTO', op: 'recv', message: (e as Error).message }));
          return;
        }
        p.resolve({ errno, msgs: p.msgs, interrupted: p.interrupted });
      } else if (m.type === NLMSG_DONE) {
        // The DONE of a dump may carry an error (int) in its payload.
        const errno = m.body.length >= 4 ? -readS32(m.body, 0) : 0;
        p.resolve({ errno: errno > 0 ? errno : 0, msgs: p.msgs, interrupted: p.interrupted });
      } else {
        p.msgs.push(m);
        if (!(m.flags & NLM_F_MULTI)) p.resolve({ errno: 0, msgs: p.msgs, interrupted: p.interrupted });
      }
    }
  }
}

function firstLink(op: string, r: Reply, what: string): LinkInfo {
  const m = r.msgs.find((x) => x.type === RTM_NEWLINK);
  if (!m) throw new NetlinkError({ errno: 'EPROTO', op, link: what, message: `${op}: the kernel sent no link message for ${what}` });
  return decodeLinkMessage(m.body);
}

function kernelError(op: string, errno: number, context: string, link?: string, message?: string): NetlinkError {
  const name = errnoName(errno);
  return new NetlinkError({
    errno: name,
    errnoNumber: errno,
    op,
    message: message ?? `${context}: ${describeErrno(name)}${describeErrno(name) === name ? '' : ` (${name})`}`,
    ...(link !== undefined ? { link } : {}),
  });
}

function fromSystemError(op: string, context: string, err: unknown): NetlinkError {
  if (err instanceof NetlinkError) return err;
  const e = err as { code?: unknown; errno?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : typeof e?.errno === 'number' ? errnoName(e.errno) : 'EIO';
  const num = typeof e?.errno === 'number' ? Math.abs(e.errno) : undefined;
  const text = typeof e?.message === 'string' ? e.message : String(err);
  return new NetlinkError({ errno: code, op, message: `${context}: ${text}`, ...(num !== undefined ? { errnoNumber: num } : {}) });
}

/**
 * Opens one rtnetlink socket in the CURRENT process' network namespace and returns the LinkOps
 * bound to it. Synchronous. Call close() when done (it is idempotent). Throws NetlinkError when
 * the socket cannot be opened.
 */
export function openLinkOps(opts: LinkOpsOptions = {}): LinkOps {
  return new RtnlLinkOps(opts);
}
