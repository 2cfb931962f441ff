/**
 * HTTP plumbing of the controller's API: JSON answers and errors, bearer-token checks in constant
 * time, request bodies with a size limit, and zod failures turned into a 400 naming the field.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type * as http from 'node:http';
import type { z } from 'zod';
import { API_MAX_BODY_BYTES, UnderlayError, type ApiError, type ApiErrorCode, type ErrorCode } from '@underlay/core';

/** An answer other than 2xx, with the JSON error body it becomes. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: ApiErrorCode,
    message: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
  body(): ApiError {
    return { error: { code: this.code, message: this.message, ...(this.field ? { field: this.field } : {}) } };
  }
}

const STATUS: Record<ErrorCode, number> = {
  'invalid-argument': 400,
  'not-found': 404,
  conflict: 409,
  exhausted: 409,
  unavailable: 503,
  internal: 500,
};

/** A field named at the start of a message ("subnets: …", "options: …"). */
const leadingField = /^([a-zA-Z][\w]*(?:\.[\w]+)*): /;

/** Any error thrown by a handler as the HTTP answer it becomes. */
export function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof UnderlayError) {
    const field = e.code === 'invalid-argument' ? leadingField.exec(e.message)?.[1] : undefined;
    return new HttpError(STATUS[e.code], e.code, e.message, field);
  }
  return new HttpError(500, 'internal', e instanceof Error ? e.message : String(e));
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  if (status === 204) {
    res.writeHead(204, headers);
    res.end();
    return;
  }
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
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

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Checks `Authorization: Bearer <token>`; compares digests so the time taken does not depend on the token. */
export function checkBearer(header: string | undefined, token: string): void {
  const realm = 'Bearer realm="underlay"';
  if (!header) {
    throw new HttpError(401, 'unauthorized', 'this API needs a bearer token: send "Authorization: Bearer TOKEN" (underlay: --token, --token-file, UNDERLAY_TOKEN or UNDERLAY_TOKEN_FILE; the controller\'s --api-token or --api-token-file)', undefined, { 'www-authenticate': realm });
  }
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  if (!m) {
    throw new HttpError(401, 'unauthorized', 'the Authorization header must be "Bearer TOKEN"', undefined, { 'www-authenticate': `${realm}, error="invalid_request"` });
  }
  if (!timingSafeEqual(digest(m[1]!), digest(token))) {
    throw new HttpError(401, 'unauthorized', 'the bearer token is not valid for this controller', undefined, { 'www-authenticate': `${realm}, error="invalid_token"` });
  }
}

/**
 * Reads a JSON body of at most `limit` bytes. A larger one is read to its end (up to 64 times the limit,
 * so the client gets the answer instead of a reset) and refused with 413.
 */
export async function readJsonBody(req: http.IncomingMessage, limit = API_MAX_BODY_BYTES): Promise<unknown> {
  const tooLarge = () => new HttpError(413, 'payload-too-large', `the request body is larger than the ${limit} bytes allowed`);
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit * 64) {
    const e = tooLarge();
    e.headers.connection = 'close';
    throw e;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size <= limit) chunks.push(b);
    else if (size > limit * 64) {
      req.destroy();
      throw tooLarge();
    }
  }
  if (size > limit) throw tooLarge();
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new HttpError(400, 'invalid-argument', 'the request needs a JSON body');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, 'invalid-argument', `the request body is not valid JSON: ${(e as Error).message}`);
  }
}
