/**
 * The CLI's side of the controller's HTTP API: where the controller is, which token to send (token files
 * are checked as the controller checks its own: private, `NAME TOKEN` or a bare token), which CA to trust
 * for https:// (--cacert), and the requests themselves (node:http/https), with answers read through the
 * API's own zod schemas. Failures become a ClientError whose message is one line for people (exit code 1).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { z } from 'zod';
import { ApiError, DEFAULT_CONTROLLER_URL, PAGE_LIMIT_RULE, PAGE_MAX, PageLimit, UnderlayError, type ErrorCode } from '@underlay/core';
// The token-file rules alone (this module loads no etcd or NATS code).
import { readTokenFile, tokenFileError } from '@underlay/controller/dist/api/tokens.js';
import { UsageError, type FlagSpec, type ResolvedFlags } from './flags.js';

/**
 * A failure talking to the controller (unreachable, refused, an API error): exit code 1. The code is the API
 * error's (or `unavailable` when the controller could not be reached, `internal` for an answer this CLI cannot
 * read); retriable when unreachable or answered 503.
 */
export class ClientError extends UnderlayError {
  constructor(
    message: string,
    readonly status?: number,
    opts: { code?: ErrorCode; cause?: unknown } = {},
  ) {
    const code = opts.code ?? (status === undefined ? 'unavailable' : 'internal');
    super(code, message, { retriable: status === 503 || (status === undefined && code === 'unavailable'), cause: opts.cause });
    this.name = 'ClientError';
  }
}

/** Token file `underlay up` writes with its default --state-dir; used when nothing else names a token. */
export const DEFAULT_TOKEN_FILE = '/var/lib/underlay/api-token';

/** Where the controller is and how to talk to it: flags, UNDERLAY_* variables, or the config file's `client:` section. */
export const clientFlags: FlagSpec[] = [
  { key: 'controller', flag: 'controller', value: 'URL', help: 'controller HTTP API', default: DEFAULT_CONTROLLER_URL },
  { key: 'token', flag: 'token', value: 'TOKEN', help: 'API token (the controller\'s --api-token)' },
  { key: 'tokenFile', flag: 'token-file', value: 'FILE', help: `file holding the API token, mode 0600: the token, or one "NAME TOKEN" line (default: ${DEFAULT_TOKEN_FILE} when readable)` },
  { key: 'cacert', flag: 'cacert', value: 'FILE', help: 'CA certificate (PEM) to trust for an https:// controller, besides the system\'s' },
];

/**
 * --page-size: rows per request for the lists the controller pages (endpoints, a network's endpoints, IPAM blocks).
 * The CLI reads every page whatever the size; the flag only trades the number of requests for their size.
 */
export const pageFlags: FlagSpec[] = [
  { key: 'pageSize', flag: 'page-size', value: 'N', help: `rows per request to the controller, 1-${PAGE_MAX} (default ${PAGE_MAX}); every page is read`, notInFile: true },
];

/** The --page-size of a command (PAGE_MAX when unset); a UsageError naming the flag for anything else than 1..PAGE_MAX. */
export function pageSizeOf(p: ResolvedFlags): number {
  const v = p.values.pageSize;
  if (v === undefined) return PAGE_MAX;
  // The API's own rule for `limit` (core's PageLimit), checked here so the error names the flag.
  const r = PageLimit.safeParse(v);
  if (!r.success) throw new UsageError(`--page-size (or UNDERLAY_PAGE_SIZE): ${PAGE_LIMIT_RULE} (got ${JSON.stringify(v)})`);
  return r.data;
}

/** A paged answer as JSON: the fields of its schema, `continue` when more rows follow. */
export type PagedRaw = Record<string, unknown> & { continue?: unknown };

/** Appends `more` to the array `key` of `into` (no spread: a page may hold thousands of rows). */
export function appendRows(into: Record<string, unknown>, more: Record<string, unknown>, key: string): void {
  const to = into[key] as unknown[];
  for (const r of more[key] as unknown[]) to.push(r);
}

/** Prints the API's JSON answer as it came. */
export function printJson(raw: unknown): void {
  process.stdout.write(`${JSON.stringify(raw, null, 2)}\n`);
}

/** Refuses arguments a command does not take. */
export function noArgs(p: ResolvedFlags, what: string): void {
  if (p.rest.length) throw new UsageError(`${what} takes no arguments (got ${p.rest.join(' ')})`);
}

export interface ClientOptions {
  controller: string;
  token?: string;
  /** CA certificates to trust for https:// (the system's and --cacert's). */
  ca?: string[];
}

const ControllerUrl = z
  .string()
  .regex(/^https?:\/\/[^\s/]+(\/[^\s]*)?$/i, 'must be a URL such as http://127.0.0.1:7410')
  .transform((u) => u.replace(/\/+$/, ''));

/** The token of a token file: refused when group or others may read or write it, empty, or holding several. */
function tokenOfFile(file: string, flag: string): string {
  let tokens;
  try {
    tokens = readTokenFile(file);
  } catch (e) {
    throw new UsageError(`${flag}: ${tokenFileError(e, file).message}`);
  }
  if (tokens.length === 0) throw new UsageError(`${flag}: ${file} is empty`);
  if (tokens.length > 1) throw new UsageError(`${flag}: ${file} holds ${tokens.length} tokens (${tokens.map((t) => t.name).join(', ')}); give the CLI a file with one`);
  return tokens[0]!.token;
}

/** --cacert: a PEM file with at least one certificate, trusted besides the system's CAs. */
function readCa(file: string): string[] {
  let pem: string;
  try {
    pem = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`--cacert (or UNDERLAY_CACERT): cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new UsageError(`--cacert (or UNDERLAY_CACERT): ${file} holds no PEM certificate`);
  return [...tls.rootCertificates, pem];
}

/**
 * --controller (or UNDERLAY_CONTROLLER), and the token: --token, --token-file, UNDERLAY_TOKEN,
 * UNDERLAY_TOKEN_FILE, then the file `underlay up` writes, in this order.
 */
export function clientOptions(p: ResolvedFlags): ClientOptions {
  const v = p.values;
  const named = (key: string, flag: string) => (p.sources[key] === 'env' ? `UNDERLAY_${flag.toUpperCase().replace(/-/g, '_')}` : p.sources[key] === 'file' ? `${flag} (config file, client:)` : `--${flag}`);
  const c = ControllerUrl.safeParse(v.controller ?? DEFAULT_CONTROLLER_URL);
  if (!c.success) throw new UsageError(`--controller (or UNDERLAY_CONTROLLER): ${c.error.issues[0]!.message}`);
  let token: string | undefined;
  const tokenArg = typeof v.token === 'string' ? v.token.trim() : undefined;
  const fileArg = typeof v.tokenFile === 'string' ? v.tokenFile : undefined;
  const rank = (key: string) => ['flag', 'env', 'file'].indexOf(p.sources[key] ?? '');
  // The strongest layer wins; in one layer, a token before a token file.
  if (tokenArg && (!fileArg || rank('token') <= rank('tokenFile'))) token = tokenArg;
  else if (fileArg) token = tokenOfFile(fileArg, named('tokenFile', 'token-file'));
  else {
    let readable = false;
    try {
      fs.accessSync(DEFAULT_TOKEN_FILE, fs.constants.R_OK);
      readable = true;
    } catch {
      /* none, or not ours to read */
    }
    if (readable) token = tokenOfFile(DEFAULT_TOKEN_FILE, DEFAULT_TOKEN_FILE);
  }
  const ca = typeof v.cacert === 'string' && v.cacert ? readCa(v.cacert) : undefined;
  return { controller: c.data, token, ca };
}

type NetError = Error & { code?: string; syscall?: string; errors?: unknown[]; reason?: string };

/** The first error of an AggregateError (every address of a name refused), or the error itself. */
function first(e: unknown): NetError {
  const err = e as NetError;
  if (!err.code && Array.isArray(err.errors) && err.errors.length) return err.errors[0] as NetError;
  return err;
}

/** "connect ECONNREFUSED" from what a request fails with. */
function why(e: unknown): string {
  const err = first(e);
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'no answer in time';
  if (err.code) return [err.syscall, err.code].filter(Boolean).join(' ');
  return err.message;
}

/** A failure to verify the controller's certificate (unknown CA, expired, another name). */
function isCertificateError(e: unknown): boolean {
  const code = first(e).code ?? '';
  return /^(CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|ERR_TLS_CERT_ALTNAME_INVALID|INVALID_CA|HOSTNAME_MISMATCH)/.test(code);
}

const NO_TIMEOUT = 0;

export class ApiClient {
  constructor(readonly opts: ClientOptions) {}

  private unreachable(e: unknown): ClientError {
    const c = this.opts.controller;
    const err = first(e);
    if (isCertificateError(e)) {
      const reason = err.code === 'ERR_TLS_CERT_ALTNAME_INVALID' ? (err.reason ?? err.message) : err.message;
      return new ClientError(`cannot verify the TLS certificate of the controller at ${c} (${err.code}: ${reason}); trust its CA with --cacert FILE or UNDERLAY_CACERT`, undefined, { code: 'invalid-argument', cause: e });
    }
    if (c.startsWith('https:') && (err.code === 'EPROTO' || /wrong version number|packet length too long/i.test(err.message))) {
      return new ClientError(`the controller at ${c} does not answer TLS (${why(e)}); if it serves plain HTTP, use http://`, undefined, { code: 'invalid-argument', cause: e });
    }
    const hint = c.startsWith('http:') && (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_CONSTANT') ? '; if it serves HTTPS (--tls-cert), use https://' : '';
    return new ClientError(`cannot reach the controller at ${c} (${why(e)}); is it running? set --controller or UNDERLAY_CONTROLLER${hint}`, undefined, { code: 'unavailable', cause: e });
  }

  private headers(body: boolean): Record<string, string> {
    const h: Record<string, string> = { accept: 'application/json' };
    if (this.opts.token) h.authorization = `Bearer ${this.opts.token}`;
    if (body) h['content-type'] = 'application/json';
    return h;
  }

  /** Sends a request; resolves with the answer's head and its body still to read. */
  private send(method: string, path: string, headers: Record<string, string>, body: string | undefined, timeoutMs: number): Promise<http.IncomingMessage> {
    const url = new URL(`${this.opts.controller}${path}`);
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(
        url,
        {
          method,
          headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) },
          ...(url.protocol === 'https:' && this.opts.ca ? { ca: this.opts.ca } : {}),
          ...(timeoutMs ? { signal: AbortSignal.timeout(timeoutMs) } : {}),
        },
        resolve,
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  /** The whole body of an answer, as text. */
  private async text(res: http.IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }

  /** A non-2xx answer as the message a person needs. */
  private async failure(res: http.IncomingMessage): Promise<ClientError> {
    const status = res.statusCode ?? 0;
    const text = await this.text(res).catch(() => '');
    let message = `HTTP ${status} ${res.statusMessage ?? ''}`.trim();
    let code: ErrorCode | undefined;
    try {
      ({ message, code } = ApiError.parse(JSON.parse(text)).error);
    } catch {
      /* not our error body (a proxy?) */
    }
    if (status === 401) {
      message = this.opts.token
        ? `the controller at ${this.opts.controller} refused the API token (${message}); check --token, --token-file, UNDERLAY_TOKEN or UNDERLAY_TOKEN_FILE`
        : `the controller at ${this.opts.controller} needs an API token: set --token, --token-file, UNDERLAY_TOKEN or UNDERLAY_TOKEN_FILE (the controller's --api-token or --api-token-file)`;
    }
    return new ClientError(message, status, { code: code ?? (status === 401 ? 'unauthorized' : status === 503 ? 'unavailable' : 'internal') });
  }

  /** One request; the answer parsed with `schema` (undefined for 204). */
  async request<S extends z.ZodType>(method: string, path: string, schema: S, body?: unknown): Promise<{ status: number; data: z.infer<S>; raw: unknown }> {
    let res: http.IncomingMessage;
    let text: string;
    try {
      res = await this.send(method, path, this.headers(body !== undefined), body === undefined ? undefined : JSON.stringify(body), 60_000);
      const status = res.statusCode ?? 0;
      if (status < 200 || status > 299) throw await this.failure(res);
      text = await this.text(res);
    } catch (e) {
      if (e instanceof ClientError) throw e;
      throw this.unreachable(e);
    }
    const status = res.statusCode!;
    if (status === 204) return { status: 204, data: undefined as z.infer<S>, raw: undefined };
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new ClientError(`the controller at ${this.opts.controller} sent an answer that is not JSON: ${(e as Error).message}`, undefined, { code: 'internal', cause: e });
    }
    const r = schema.safeParse(raw);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new ClientError(`unexpected answer from the controller at ${this.opts.controller} (${i.path.join('.')}: ${i.message}); is it the same version as this CLI?`, undefined, { code: 'internal', cause: r.error });
    }
    return { status, data: r.data, raw };
  }

  get<S extends z.ZodType>(path: string, schema: S) {
    return this.request('GET', path, schema);
  }

  /**
   * A paged list read whole: GET `path` with `limit=pageSize`, then again with each answer's `continue` until an answer
   * has none. `merge` adds a later page's rows (its JSON as it came) to the first page's; each page is checked with
   * `schema`. The result has no `continue`: it is the answer the API gave before it paged, every row in order. A
   * controller that hands back the token it was given (it would never end) is an error, not a loop.
   */
  async getAll<S extends z.ZodType>(path: string, schema: S, pageSize: number, merge: (into: PagedRaw, page: PagedRaw) => void): Promise<{ data: z.infer<S>; raw: unknown }> {
    const sep = path.includes('?') ? '&' : '?';
    let all: PagedRaw | undefined;
    let token: string | undefined;
    for (let pages = 1; ; pages++) {
      const q = new URLSearchParams({ limit: String(pageSize), ...(token === undefined ? {} : { continue: token }) });
      const { raw } = await this.request('GET', `${path}${sep}${q}`, schema);
      const page = raw as PagedRaw;
      const next = page.continue;
      delete page.continue;
      if (all) merge(all, page);
      else all = page;
      if (next === undefined) break;
      if (typeof next !== 'string' || next === token) {
        throw new ClientError(`the controller at ${this.opts.controller} answered page ${pages} of ${path} with the token it was given; is it the same version as this CLI?`, undefined, { code: 'internal' });
      }
      token = next;
    }
    const r = schema.safeParse(all);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new ClientError(`unexpected answer from the controller at ${this.opts.controller} (${i.path.join('.')}: ${i.message}, all pages of ${path} together)`, undefined, { code: 'internal', cause: r.error });
    }
    return { data: r.data, raw: all };
  }

  /**
   * Reads an NDJSON stream, calling `onLine` with each parsed line, until the controller ends it (or the
   * connection breaks: then `lost` is true). Failing to connect, or an error answer, throws.
   */
  async stream(path: string, onLine: (value: unknown) => void): Promise<{ lost: boolean; why?: string }> {
    let res: http.IncomingMessage;
    try {
      res = await this.send('GET', path, { ...this.headers(false), accept: 'application/x-ndjson' }, undefined, NO_TIMEOUT);
    } catch (e) {
      throw this.unreachable(e);
    }
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) throw await this.failure(res);
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res) {
        buf += decoder.decode(chunk as Buffer, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) onLine(JSON.parse(line));
        }
      }
    } catch (e) {
      return { lost: true, why: why(e) };
    }
    // The stream ended: by the controller (its maximum duration), or cut off mid-way.
    return res.complete ? { lost: false } : { lost: true, why: 'the connection was cut' };
  }
}
