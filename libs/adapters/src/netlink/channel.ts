/**
 * A netlink request/response channel over one rtnetlink socket (netlink@0.3.0's RawNetlinkSocket),
 * shared by LinkOps and RouteOps.
 *
 * - The socket acts on the network namespace of the process that opened the channel.
 * - Requests are serialized (one in flight): the kernel refuses a second dump on a socket that is
 *   still dumping (EBUSY), and one-at-a-time keeps replies trivially matched by sequence number.
 * - A request settles with the kernel's ack/error (errno), the end of a dump (NLMSG_DONE, which may
 *   carry an errno), or a single non-multipart reply; socket failures, undecodable replies, closing
 *   and timeouts reject with a NetlinkError.
 * - The socket does not keep the event loop alive while idle (it is ref()'d while a request waits).
 */
import type { MessageInfo, RawNetlinkSocket } from 'netlink';

/**
 * netlink@0.3.0, loaded when the first channel opens: the controller (which imports this package and never opens one)
 * does not pay its ~35 ms load at start-up.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const netlinkModule = (): typeof import('netlink') => require('netlink') as typeof import('netlink');

import { decodeErrorMessage, parseNlmsgs, type Nlmsg } from './decode.js';
import { NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTI, NLM_F_REQUEST, buildNlmsg, readS32 } from './encode.js';
import { NetlinkError, describeErrno, errnoName } from './errors.js';

export const DEFAULT_TIMEOUT_MS = 10_000;
export const DUMP_RETRIES = 5;

export interface Reply {
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
  resolve(r: Reply): void;
  reject(e: Error): void;
}

export interface ChannelOptions {
  /** Names the owner in errors ("the LinkOps was closed"). */
  owner: string;
  /** The operation reported when the socket cannot be opened ('openLinkOps'). */
  openOp: string;
  /** Per-request timeout (default 10000 ms). */
  timeoutMs?: number | undefined;
  /** The first sequence number is seq + 1. */
  seq: number;
}

export class NetlinkChannel {
  private sock: RawNetlinkSocket | undefined;
  private readonly timeoutMs: number;
  private readonly owner: string;
  private seq: number;
  private pending: Pending | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  /** Opens the socket; throws NetlinkError when it cannot be opened. */
  constructor(opts: ChannelOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.owner = opts.owner;
    this.seq = opts.seq;
    let sock: RawNetlinkSocket;
    try {
      const { RawNetlinkSocket: Socket, Protocol } = netlinkModule();
      sock = new Socket(Protocol.ROUTE);
    } catch (e) {
      throw fromSystemError(opts.openOp, 'cannot open an rtnetlink socket', e);
    }
    sock.unref(); // idle sockets must not keep the process alive; ref()'d while a request waits
    sock.on('message', (buf: Buffer, rinfo: MessageInfo) => this.onDatagram(buf, rinfo));
    sock.on('truncatedMessage', () =>
      this.failPending(new NetlinkError({ errno: 'EMSGSIZE', op: 'recv', message: 'netlink reply was truncated' })),
    );
    sock.on('error', (err: unknown) => this.failPending(fromSystemError('socket', 'netlink socket error', err)));
    this.sock = sock;
  }

  /** Sends one request and resolves with its reply; each request waits for the previous one to settle. */
  request(op: string, type: number, flags: number, body: Buffer): Promise<Reply> {
    const run = (): Promise<Reply> => this.exchange(op, type, flags, body);
    const p = this.tail.then(run, run);
    this.tail = p.catch(() => undefined);
    return p;
  }

  /**
   * A dump (NLM_F_REQUEST | NLM_F_DUMP), retried while the kernel flags it interrupted. A kernel error
   * rejects with "`what`: <errno>"; a dump still interrupted after DUMP_RETRIES attempts rejects with EINTR.
   */
  async dump(op: string, type: number, body: Buffer, what: string, table = 'the table'): Promise<Nlmsg[]> {
    for (let attempt = 1; ; attempt++) {
      const r = await this.request(op, type, NLM_F_REQUEST | NLM_F_DUMP, body);
      if (r.errno) throw kernelError(op, r.errno, what);
      if (!r.interrupted) return r.msgs;
      if (attempt >= DUMP_RETRIES) {
        throw new NetlinkError({ errno: 'EINTR', op, message: `${what}: ${table} kept changing during ${DUMP_RETRIES} dumps` });
      }
    }
  }

  /** Closes the socket; idempotent. A request in flight and later ones reject with NetlinkError('EBADF'). */
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

  private exchange(op: string, type: number, flags: number, body: Buffer): Promise<Reply> {
    const sock = this.sock;
    if (!sock) return Promise.reject(new NetlinkError({ errno: 'EBADF', op, message: `${op}: the ${this.owner} was closed` }));
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
      this.failPending(new NetlinkError({ errno: 'EPROTO', op: 'recv', message: `undecodable netlink reply: ${(e as Error).message}`, cause: e }));
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
          this.failPending(new NetlinkError({ errno: 'EPROTO', op: 'recv', message: (e as Error).message, cause: e }));
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

/** A NetlinkError for an errno the kernel returned: "`context`: <errno described>", or `message` when given. */
export function kernelError(op: string, errno: number, context: string, link?: string, message?: string): NetlinkError {
  const name = errnoName(errno);
  return new NetlinkError({
    errno: name,
    errnoNumber: errno,
    op,
    message: message ?? `${context}: ${describeErrno(name)}${describeErrno(name) === name ? '' : ` (${name})`}`,
    ...(link !== undefined ? { link } : {}),
  });
}

/** A NetlinkError for a failure of the socket itself (a Node system error, or anything thrown). */
export function fromSystemError(op: string, context: string, err: unknown): NetlinkError {
  if (err instanceof NetlinkError) return err;
  const e = err as { code?: unknown; errno?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : typeof e?.errno === 'number' ? errnoName(e.errno) : 'EIO';
  const num = typeof e?.errno === 'number' ? Math.abs(e.errno) : undefined;
  const text = typeof e?.message === 'string' ? e.message : String(err);
  return new NetlinkError({ errno: code, op, message: `${context}: ${text}`, cause: err, ...(num !== undefined ? { errnoNumber: num } : {}) });
}
