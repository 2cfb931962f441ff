/**
 * Errors that carry a user-facing text. `message` is what a user of `docker network …` sees after
 * Docker's own `remote: ` prefix, so it must read well on its own. ERROR_CODES is the one list of codes:
 * the wire enum (protocol/rpc.ts) and the HTTP API's codes (protocol/api.ts) are made from it.
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
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class UnderlayError extends Error {
  readonly code: ErrorCode;
  /** True when repeating the same request later may succeed (leader change, commit conflict). */
  readonly retriable: boolean;
  constructor(code: ErrorCode, message: string, opts: { retriable?: boolean; cause?: unknown } = {}) {
    // A message built from many parts (every endpoint on a network…) still fits the wire's bound.
    super(clipText(message, LIMITS.message), opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'UnderlayError';
    this.code = code;
    this.retriable = opts.retriable ?? false;
  }
}

export class InvalidArgumentError extends UnderlayError {
  constructor(message: string) {
    super('invalid-argument', message);
    this.name = 'InvalidArgumentError';
  }
}

export class NotFoundError extends UnderlayError {
  constructor(message: string) {
    super('not-found', message);
    this.name = 'NotFoundError';
  }
}

export class ConflictError extends UnderlayError {
  constructor(message: string) {
    super('conflict', message);
    this.name = 'ConflictError';
  }
}

export class ExhaustedError extends UnderlayError {
  constructor(message: string) {
    super('exhausted', message);
    this.name = 'ExhaustedError';
  }
}

export class UnavailableError extends UnderlayError {
  constructor(message: string) {
    super('unavailable', message, { retriable: true });
    this.name = 'UnavailableError';
  }
}

/**
 * A node asked to change what another node holds (release or bind its address, remove its network). Not
 * retriable: the answer stays the same. The message names the holder.
 */
export class PermissionDeniedError extends UnderlayError {
  constructor(message: string) {
    super('permission-denied', message);
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
