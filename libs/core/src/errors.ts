/**
 * The one error model of underlay. Every error class in the code base derives from `UnderlayError`: a `code` from
 * ERROR_CODES, a `message` a user reads (for the Docker plugin, what `docker network …` prints after Docker's own
 * `remote: ` prefix, so it must read well on its own), `retriable`, and the `cause` it wraps, if any.
 *
 * ERROR_CODES is the one list of codes: the NATS wire enum (protocol/rpc.ts) and the HTTP API's codes
 * (protocol/api.ts) are made from it. Callers decide by code (and `retriable`), never by matching message text.
 */
import { LIMITS, clipText } from './limits.js';

export const ERROR_CODES = [
  'invalid-argument',
  'not-found',
  'conflict',
  'exhausted',
  'unavailable',
  /** The caller may not act on what it named: another node holds it. */
  'permission-denied',
  'internal',
  /** A read below the first kept event of the log: start again from the latest snapshot. */
  'events-trimmed',
  /** Another writer appended to the event log first: reload and try again. */
  'commit-conflict',
  /** The latest snapshot cannot be used (missing part, wrong length or checksum). */
  'snapshot-corrupt',
  /** The leader campaign was stopped before this controller was elected. */
  'election-stopped',
  /** The kernel (netlink) refused a link or route operation; the error carries the errno. */
  'netlink',
  /** The Docker Engine API answered with an error status. */
  'docker-api',
  /** gobgpd's gRPC API failed; the error carries the gRPC status. */
  'gobgp',
  /** HTTP API: no valid bearer token. */
  'unauthorized',
  /** HTTP API: the path does not take this method. */
  'method-not-allowed',
  /** HTTP API: the request body is larger than allowed. */
  'payload-too-large',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * Codes whose failures are retriable unless the error says otherwise: the same request later may succeed (the
 * controller is back, the log was reloaded). Every other code is final unless its error says it is retriable.
 */
export const RETRIABLE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['unavailable', 'commit-conflict']);

/** Whether `code` is one of ERROR_CODES. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && (ERROR_CODES as readonly string[]).includes(code);
}

/** Whether `err` is an UnderlayError with one of `codes`. */
export function hasErrorCode(err: unknown, ...codes: ErrorCode[]): err is UnderlayError {
  return err instanceof UnderlayError && codes.includes(err.code);
}

/** Whether repeating what failed may succeed: an UnderlayError that says so. Anything else is not retriable. */
export function isRetriable(err: unknown): boolean {
  return err instanceof UnderlayError && err.retriable;
}

export interface UnderlayErrorOptions {
  /** Default: whether the code is in RETRIABLE_CODES. */
  retriable?: boolean;
  /** The failure this error wraps (kept as the standard `cause`). */
  cause?: unknown;
}

export class UnderlayError extends Error {
  readonly code: ErrorCode;
  /** True when repeating the same request later may succeed (leader change, commit conflict). */
  readonly retriable: boolean;
  constructor(code: ErrorCode, message: string, opts: UnderlayErrorOptions = {}) {
    // A message built from many parts (every endpoint on a network…) still fits the wire's bound.
    super(clipText(message, LIMITS.message), opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'UnderlayError';
    this.code = code;
    this.retriable = opts.retriable ?? RETRIABLE_CODES.has(code);
  }
}

export class InvalidArgumentError extends UnderlayError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('invalid-argument', message, opts);
    this.name = 'InvalidArgumentError';
  }
}

export class NotFoundError extends UnderlayError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('not-found', message, opts);
    this.name = 'NotFoundError';
  }
}

export class ConflictError extends UnderlayError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('conflict', message, opts);
    this.name = 'ConflictError';
  }
}

export class ExhaustedError extends UnderlayError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('exhausted', message, opts);
    this.name = 'ExhaustedError';
  }
}

export class UnavailableError extends UnderlayError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('unavailable', message, { ...opts, retriable: true });
    this.name = 'UnavailableError';
  }
}

/**
 * A node asked to change what another node holds (release or bind its address, remove its network). Not
 * retriable: the answer stays the same. The message names the holder.
 */
export class PermissionDeniedError extends UnderlayError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super('permission-denied', message, opts);
    this.name = 'PermissionDeniedError';
  }
}

/** Wire form of an error, as carried in NATS replies and the HTTP API. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  retriable: boolean;
}

export function toErrorBody(err: unknown): ErrorBody {
  if (err instanceof UnderlayError) return { code: err.code, message: err.message, retriable: err.retriable };
  const message = clipText(err instanceof Error ? err.message : String(err), LIMITS.message);
  return { code: 'internal', message, retriable: false };
}

export function fromErrorBody(body: ErrorBody): UnderlayError {
  return new UnderlayError(body.code, body.message, { retriable: body.retriable });
}
