/**
 * Errors that carry a user-facing text. `message` is what a user of `docker network …` sees after
 * Docker's own `remote: ` prefix, so it must read well on its own.
 */
export type ErrorCode =
  | 'invalid-argument'
  | 'not-found'
  | 'conflict'
  | 'exhausted'
  | 'unavailable'
  | 'internal';

export class UnderlayError extends Error {
  readonly code: ErrorCode;
  /** True when repeating the same request later may succeed (leader change, commit conflict). */
  readonly retriable: boolean;
  constructor(code: ErrorCode, message: string, opts: { retriable?: boolean } = {}) {
    super(message);
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

/** Wire form of an error, as carried in NATS replies and the HTTP API. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  retriable: boolean;
}

export function toErrorBody(err: unknown): ErrorBody {
  if (err instanceof UnderlayError) return { code: err.code, message: err.message, retriable: err.retriable };
  const message = err instanceof Error ? err.message : String(err);
  return { code: 'internal', message, retriable: false };
}

export function fromErrorBody(body: ErrorBody): UnderlayError {
  return new UnderlayError(body.code, body.message, { retriable: body.retriable });
}
