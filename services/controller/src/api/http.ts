/**
 * HTTP plumbing of the controller's API: JSON answers and errors, bearer-token checks (named tokens, in
 * constant time), request bodies with a size limit enforced before reading (declared length) and while
 * reading (chunked), answers to requests whose body was not read (the connection is closed after a short,
 * bounded drain), and zod failures turned into a 400 naming the field.
 */
import type * as http from 'node:http';
import type { z } from 'zod';
import { API_MAX_BODY_BYTES, LIMITS, UnderlayError, clipText, type ApiError, type ErrorCode } from '@underlay/core';
import { LINGER_BYTES, LINGER_MS } from './limits.js';
import type { ApiTokens } from './tokens.js';

/**
 * An answer other than 2xx, with the JSON error body it becomes. Retriable when the status is 503 (the client may
 * ask again later); `cause` is the error it was made from, if any.
 */
export class HttpError extends UnderlayError {
  constructor(
    readonly status: number,
    code: ErrorCode,
    message: string,
    field?: string,
    readonly headers: Record<string, string> = {},
    cause?: unknown,
  ) {
    // A message or field path built from a client's input (an echoed value, a long key) still fits the
    // answer's schema (UnderlayError clips the message).
    super(code, message, { retriable: status === 503, cause });
    this.name = 'HttpError';
    this.field = field === undefined ? undefined : clipText(field, LIMITS.name);
  }
  readonly field?: string;
  body(): ApiError {
    return { error: { code: this.code, message: this.message, ...(this.field ? { field: this.field } : {}) } };
  }
}

const STATUS: Record<ErrorCode, number> = {
  'invalid-argument': 400,
  'permission-denied': 403,
  'not-found': 404,
  conflict: 409,
  exhausted: 409,
  unavailable: 503,
  internal: 500,
  // Read below the first kept event: 404, as before it had a code of its own.
  'events-trimmed': 404,
  // Another writer committed first: asking again later succeeds, as for unavailable.
  'commit-conflict': 503,
  'election-stopped': 503,
  'snapshot-corrupt': 500,
  netlink: 500,
  'docker-api': 500,
  gobgp: 500,
  unauthorized: 401,
  'method-not-allowed': 405,
  'payload-too-large': 413,
};

/** A field named at the start of a message ("subnets: …", "options: …"). */
const leadingField = /^([a-zA-Z][\w]*(?:\.[\w]+)*): /;

/** Any error thrown by a handler as the HTTP answer it becomes. */
export function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof UnderlayError) {
    const field = e.code === 'invalid-argument' ? leadingField.exec(e.message)?.[1] : undefined;
    return new HttpError(STATUS[e.code], e.code, e.message, field, {}, e);
  }
  return new HttpError(500, 'internal', e instanceof Error ? e.message : String(e), undefined, {}, e);
}

/**
 * Sends a JSON answer. When the request's body was not read to its end (refused before reading it, cut
 * off, or a body nobody asked for), the answer says `connection: close` and the connection is closed
 * once the client has had a moment to read it: what it still sends meanwhile is discarded, at most
 * LINGER_MS and LINGER_BYTES (closing at once would reset the connection under the client's answer).
 */
export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const req = res.req as http.IncomingMessage | undefined;
  const unread = !!req && !req.complete;
  const h: Record<string, string | number> = { ...headers };
  if (unread) h.connection = 'close';
  if (status === 204) {
    res.writeHead(204, h);
  } else {
    const text = `${JSON.stringify(body)}\n`;
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...h });
    res.write(text);
  }
  if (unread) linger(req, res);
  else res.end();
}

/** Ends `res` after the client finished sending, LINGER_BYTES more came, or LINGER_MS passed; discards what comes. */
function linger(req: http.IncomingMessage, res: http.ServerResponse): void {
  let seen = 0;
  const done = () => {
    clearTimeout(timer);
    req.off('data', onData);
    req.off('end', done);
    req.off('close', done);
    if (!res.writableEnded) res.end();
  };
  const onData = (b: Buffer) => {
    seen += b.length;
    if (seen > LINGER_BYTES) done();
  };
  const timer = setTimeout(done, LINGER_MS);
  timer.unref();
  req.on('data', onData);
  req.once('end', done);
  req.once('close', done);
  req.resume();
}

export function sendError(res: http.ServerResponse, e: unknown): void {
  const h = toHttpError(e);
  sendJson(res, h.status, h.body(), h.headers);
}

/** A zod failure as a 400: "subnets.0.subnet: invalid CIDR: …", naming the first wrong field. */
export function invalid(err: z.ZodError, where = ''): HttpError {
  const parts = err.issues.map((i) => {
    const path = [where, ...i.path.map(String)].filter(Boolean).join('.');
    if (i.code === 'unrecognized_keys') {
      const keys = i.keys.map((k) => (path ? `${path}.${k}` : k));
      return { field: keys[0]!, text: `${keys.join(', ')}: unknown field${keys.length > 1 ? 's' : ''}` };
    }
    let msg = i.message.replace(/^Invalid input: /, '');
    if (i.code === 'invalid_type' && /received undefined$/.test(i.message)) msg = `is required (${msg.replace(/, received undefined$/, '')})`;
    return { field: path, text: path ? `${path}: ${msg}` : msg };
  });
  return new HttpError(400, 'invalid-argument', parts.map((p) => p.text).join('; '), parts[0]?.field || undefined);
}

/** Parses with a schema or throws the 400. */
export function parseWith<S extends z.ZodType>(schema: S, value: unknown, where = ''): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw invalid(r.error, where);
  return r.data;
}

/**
 * Checks `Authorization: Bearer <token>` against every named token (in constant time: api/tokens.ts)
 * and returns the token's name, the actor of what the request does.
 */
export function checkBearer(header: string | undefined, tokens: ApiTokens): string {
  const realm = 'Bearer realm="underlay"';
  if (!header) {
    throw new HttpError(401, 'unauthorized', 'this API needs a bearer token: send "Authorization: Bearer TOKEN" (underlay: --token, --token-file, UNDERLAY_TOKEN or UNDERLAY_TOKEN_FILE; the controller\'s --api-token or --api-token-file)', undefined, { 'www-authenticate': realm });
  }
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  if (!m) {
    throw new HttpError(401, 'unauthorized', 'the Authorization header must be "Bearer TOKEN"', undefined, { 'www-authenticate': `${realm}, error="invalid_request"` });
  }
  const name = tokens.nameOf(m[1]!);
  if (name === undefined) {
    throw new HttpError(401, 'unauthorized', 'the bearer token is not valid for this controller', undefined, { 'www-authenticate': `${realm}, error="invalid_token"` });
  }
  return name;
}

/**
 * Reads a JSON body of at most `limit` bytes. A declared Content-Length over the limit is refused (413)
 * before any of the body is read; a body without one (chunked) is cut off as soon as it passes the limit.
 * Either way the answer closes the connection (sendJson) and nothing more is buffered.
 */
export async function readJsonBody(req: http.IncomingMessage, limit = API_MAX_BODY_BYTES): Promise<unknown> {
  const tooLarge = () => new HttpError(413, 'payload-too-large', `the request body is larger than the ${limit} bytes allowed`);
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw tooLarge();
  const body = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (b: Buffer) => {
      size += b.length;
      if (size > limit) {
        stop();
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(b);
    };
    const onEnd = () => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    const onError = (e: Error) => {
      stop();
      reject(new HttpError(400, 'invalid-argument', `the request body could not be read: ${e.message}`, undefined, {}, e));
    };
    const onClose = () => {
      if (req.complete) return;
      stop();
      reject(new HttpError(400, 'invalid-argument', 'the client closed the connection before the end of the body'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
  const text = body.toString('utf8');
  if (text.trim() === '') throw new HttpError(400, 'invalid-argument', 'the request needs a JSON body');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, 'invalid-argument', `the request body is not valid JSON: ${(e as Error).message}`, undefined, {}, e);
  }
}
