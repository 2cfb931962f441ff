import { getSystemErrorName } from 'node:util';
import { UnderlayError } from '@underlay/core';

/** Errnos after which the same operation may succeed later (the kernel was busy or slow). */
const RETRIABLE_ERRNOS = new Set(['EBUSY', 'EAGAIN', 'ETIMEDOUT', 'ENOBUFS', 'EINTR']);

/**
 * Every failure of the netlink link adapter. `message` reads well on its own
 * (e.g. "cannot create macvlan mv0: parent interface eth9 not found");
 * `errno` is the symbolic errno ('EEXIST', 'ENODEV', 'ENOTSUP', 'EBUSY', 'EINVAL', 'ETIMEDOUT', 'EBADF', …).
 *
 * Note: Node names errno 95 'ENOTSUP' (on Linux EOPNOTSUPP == ENOTSUP == 95), which is what the
 * kernel returns for a link kind it does not know (e.g. ipvlan without the module).
 */
export class NetlinkError extends UnderlayError {
  /** Symbolic errno, e.g. 'ENODEV'. */
  readonly errno: string;
  /** The LinkOps operation that failed, e.g. 'createMacvlan'. */
  readonly op: string;
  /** Numeric (positive) errno when the error came from the kernel or the socket. */
  readonly errnoNumber?: number;
  /** The link name (or "#index") the operation was about, when there is one. */
  readonly link?: string;

  constructor(opts: { errno: string; op: string; message: string; errnoNumber?: number; link?: string; cause?: unknown }) {
    // Retriable when the kernel was busy or slow; the rest (no such device, exists, not supported) stays so.
    super('netlink', opts.message, { retriable: RETRIABLE_ERRNOS.has(opts.errno), cause: opts.cause });
    this.name = 'NetlinkError';
    this.errno = opts.errno;
    this.op = opts.op;
    if (opts.errnoNumber !== undefined) this.errnoNumber = opts.errnoNumber;
    if (opts.link !== undefined) this.link = opts.link;
  }
}

/** Positive errno number -> symbolic name ('ENODEV'); falls back to 'E<n>' for unknown numbers. */
export function errnoName(errno: number): string {
  const n = Math.abs(errno);
  try {
    return getSystemErrorName(-n);
  } catch {
    return `E${n}`;
  }
}

/** Short human wording for the errnos this adapter commonly sees. */
export function describeErrno(errno: string): string {
  switch (errno) {
    case 'EEXIST':
      return 'already exists';
    case 'ENODEV':
      return 'no such device';
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return 'operation not supported by this kernel';
    case 'EBUSY':
      return 'device or resource busy';
    case 'EINVAL':
      return 'invalid argument';
    case 'EPERM':
    case 'EACCES':
      return 'permission denied (needs CAP_NET_ADMIN in this network namespace)';
    case 'EADDRNOTAVAIL':
      return 'address not available';
    case 'ERANGE':
      return 'value out of range';
    case 'ENFILE':
    case 'EMFILE':
      return 'too many open files';
    default:
      return errno;
  }
}
