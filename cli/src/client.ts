/**
 * The CLI's side of the controller's HTTP API: where the controller is, which token to send, and the
 * requests themselves, with answers read through the API's own zod schemas. Failures become a
 * ClientError whose message is one line for people (exit code 1).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { z } from 'zod';
import { ApiError, DEFAULT_CONTROLLER_URL } from '@underlay/core';
import { UsageError, envName, helpFor, parseFlags, type FlagSpec, type ParsedFlags } from './flags.js';

/** A failure talking to the controller (unreachable, refused, an API error): exit code 1. */
export class ClientError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = 'ClientError';
  }
}

/** Token file `underlay up` writes with its default --state-dir; used when nothing else names a token. */
export const DEFAULT_TOKEN_FILE = '/var/lib/underlay/api-token';

export const clientFlags: FlagSpec[] = [
  { key: 'controller', flag: 'controller', value: 'URL', help: `controller HTTP API (${DEFAULT_CONTROLLER_URL})` },
  { key: 'token', flag: 'token', help: 'API token (the controller\'s --api-token)' },
  { key: 'tokenFile', flag: 'token-file', value: 'FILE', help: `file holding the API token (${DEFAULT_TOKEN_FILE} when readable)` },
  { key: 'json', flag: 'json', boolean: true, help: 'print the API\'s JSON instead of a table' },
];

/** Only the client flags' UNDERLAY_* variables (so UNDERLAY_SUBNET cannot slip into `network create`). */
export function clientEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return Object.fromEntries(clientFlags.map((f) => envName(f.flag)).filter((k) => env[k] !== undefined).map((k) => [k, env[k]]));
}

/** Prints the API's JSON answer as it came (`--json`). */
export function printJson(raw: unknown): void {
  process.stdout.write(`${JSON.stringify(raw, null, 2)}\n`);
}

/**
 * Prints a command's usage when asked (`help`, `--help`, `-h`: exit 0) or when no sub-command was given
 * (exit 2); undefined when the command should run.
 */
export function helpRequested(sub: string | undefined, p: ParsedFlags, usage: string, flags: FlagSpec[]): number | undefined {
  if (sub && !p.help && sub !== 'help' && sub !== '--help' && sub !== '-h') return undefined;
  process.stdout.write(`usage:\n${usage.replace(/^/gm, '  ')}\n\nflags:\n${helpFor(flags)}\n`);
  return sub || p.help ? 0 : 2;
}

/** Refuses arguments a command does not take. */
export function noArgs(p: ParsedFlags, what: string): void {
  if (p.rest.length) throw new UsageError(`${what} takes no arguments (got ${p.rest.join(' ')})`);
}

/**
 * The opening of a command with one sub-command and no arguments (`node ls`, `endpoint ls`, `ipam usage`):
 * its parsed flags and client options, or the exit code when it printed its usage.
 */
export function singleCommand(argv: string[], c: { name: string; subs: readonly string[]; flags: FlagSpec[]; usage: string }): { p: ParsedFlags; opts: ClientOptions } | number {
  const [sub, ...args] = argv;
  const p = parseFlags(args, c.flags, clientEnv());
  const help = helpRequested(sub, p, c.usage, c.flags);
  if (help !== undefined) return help;
  if (!c.subs.includes(sub!)) throw new UsageError(`unknown ${c.name} command ${JSON.stringify(sub)}; usage: ${c.usage}`);
  noArgs(p, `${c.name} ${c.subs[0]}`);
  return { p, opts: clientOptions(p) };
}

export interface ClientOptions {
  controller: string;
  token?: string;
  json: boolean;
}

const ControllerUrl = z
  .string()
  .regex(/^https?:\/\/[^\s/]+(\/[^\s]*)?$/i, 'must be a URL such as http://127.0.0.1:7410')
  .transform((u) => u.replace(/\/+$/, ''));

function readTokenFile(file: string, flag: string): string {
  let t: string;
  try {
    t = fs.readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new UsageError(`${flag}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!t) throw new UsageError(`${flag}: ${file} is empty`);
  return t;
}

/**
 * --controller (or UNDERLAY_CONTROLLER), and the token: --token, --token-file, UNDERLAY_TOKEN,
 * UNDERLAY_TOKEN_FILE, then the file `underlay up` writes, in this order.
 */
export function clientOptions(p: ParsedFlags): ClientOptions {
  const v = p.values;
  const c = ControllerUrl.safeParse(v.controller ?? DEFAULT_CONTROLLER_URL);
  if (!c.success) throw new UsageError(`--controller (or UNDERLAY_CONTROLLER): ${c.error.issues[0]!.message}`);
  let token: string | undefined;
  const tokenArg = typeof v.token === 'string' ? v.token.trim() : undefined;
  const fileArg = typeof v.tokenFile === 'string' ? v.tokenFile : undefined;
  if (tokenArg && p.fromFlags.has('token')) token = tokenArg;
  else if (fileArg && p.fromFlags.has('tokenFile')) token = readTokenFile(fileArg, '--token-file');
  else if (tokenArg) token = tokenArg;
  else if (fileArg) token = readTokenFile(fileArg, 'UNDERLAY_TOKEN_FILE');
  else {
    try {
      token = fs.readFileSync(DEFAULT_TOKEN_FILE, 'utf8').trim() || undefined;
    } catch {
      /* none */
    }
  }
  return { controller: c.data, token, json: v.json === true };
}

/** "connect ECONNREFUSED" from what fetch throws. */
function why(e: unknown): string {
  const err = e as Error & { cause?: unknown };
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'no answer in time';
  let c = err.cause as (Error & { code?: string; syscall?: string; errors?: unknown[] }) | undefined;
  if (c && !c.code && Array.isArray(c.errors) && c.errors.length) c = c.errors[0] as typeof c;
  if (c?.code) return [c.syscall, c.code].filter(Boolean).join(' ');
  return c?.message ?? err.message;
}

export class ApiClient {
  constructor(readonly opts: ClientOptions) {}

  private unreachable(e: unknown): ClientError {
    return new ClientError(`cannot reach the controller at ${this.opts.controller} (${why(e)}); is it running? set --controller or UNDERLAY_CONTROLLER`);
  }

  private headers(body: boolean): Record<string, string> {
    const h: Record<string, string> = { accept: 'application/json' };
    if (this.opts.token) h.authorization = `Bearer ${this.opts.token}`;
    if (body) h['content-type'] = 'application/json';
    let user = 'cli';
    try {
      user = os.userInfo().username || user;
    } catch {
      /* no user entry */
    }
    h['x-underlay-user'] = user;
    return h;
  }

  /** A non-2xx answer as the message a person needs. */
  private async failure(res: Response): Promise<ClientError> {
    const text = await res.text().catch(() => '');
    let message = `HTTP ${res.status} ${res.statusText}`;
    try {
      message = ApiError.parse(JSON.parse(text)).error.message;
    } catch {
      /* not our error body (a proxy?) */
    }
    if (res.status === 401) {
      message = this.opts.token
        ? `the controller at ${this.opts.controller} refused the API token (${message}); check --token, --token-file, UNDERLAY_TOKEN or UNDERLAY_TOKEN_FILE`
        : `the controller at ${this.opts.controller} needs an API token: set --token, --token-file, UNDERLAY_TOKEN or UNDERLAY_TOKEN_FILE (the controller's --api-token or --api-token-file)`;
    }
    return new ClientError(message, res.status);
  }

  /** One request; the answer parsed with `schema` (undefined for 204). */
  async request<S extends z.ZodType>(method: string, path: string, schema: S, body?: unknown): Promise<{ status: number; data: z.infer<S>; raw: unknown }> {
    let res: Response;
    try {
      res = await fetch(`${this.opts.controller}${path}`, {
        method,
        headers: this.headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(60_000),
      });
    } catch (e) {
      throw this.unreachable(e);
    }
    if (!res.ok) throw await this.failure(res);
    if (res.status === 204) return { status: 204, data: undefined as z.infer<S>, raw: undefined };
    let raw: unknown;
    try {
      raw = await res.json();
    } catch (e) {
      throw new ClientError(`the controller at ${this.opts.controller} sent an answer that is not JSON: ${(e as Error).message}`);
    }
    const r = schema.safeParse(raw);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new ClientError(`unexpected answer from the controller at ${this.opts.controller} (${i.path.join('.')}: ${i.message}); is it the same version as this CLI?`);
    }
    return { status: res.status, data: r.data, raw };
  }

  get<S extends z.ZodType>(path: string, schema: S) {
    return this.request('GET', path, schema);
  }

  /**
   * Reads an NDJSON stream, calling `onLine` with each parsed line, until the controller ends it (or the
   * connection breaks: then `lost` is true). Failing to connect, or an error answer, throws.
   */
  async stream(path: string, onLine: (value: unknown) => void): Promise<{ lost: boolean; why?: string }> {
    let res: Response;
    try {
      res = await fetch(`${this.opts.controller}${path}`, { headers: { ...this.headers(false), accept: 'application/x-ndjson' } });
    } catch (e) {
      throw this.unreachable(e);
    }
    if (!res.ok) throw await this.failure(res);
    if (!res.body) return { lost: false };
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
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
    return { lost: false };
  }
}
