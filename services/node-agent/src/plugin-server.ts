/**
 * The Docker plugin socket: HTTP over a unix socket, one POST per method (`/NetworkDriver.Join` …).
 * Answers follow libnetwork exactly: `{}` for an empty success, `Err` for NetworkDriver errors and
 * `Error` for IpamDriver errors, both on HTTP 200 (Docker shows them as `remote: <text>`).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { ZodError } from 'zod';
import { InvalidArgumentError, UnderlayError, plugin } from '@underlay/core';
import { SpanKind, attr, contextFrom, tracingOn, withSpan, logWarn } from '@underlay/adapters';
import { PluginTraces } from './plugin-traces.js';

export type Handler = (body: unknown) => Promise<unknown> | unknown;
export type Routes = Record<string, Handler>;

const CONTENT_TYPE = 'application/vnd.docker.plugins.v1.1+json';
const MAX_BODY = 1024 * 1024;

function errorText(e: unknown): string {
  if (e instanceof ZodError) {
    const i = e.issues[0];
    return `invalid request: ${i ? `${i.path.join('.') || '(body)'}: ${i.message}` : 'malformed'}`;
  }
  if (e instanceof UnderlayError) return e.message;
  return (e as Error)?.message ?? String(e);
}

/**
 * A plugin call in a SERVER span `docker <Call>` (`/NetworkDriver.Join` → `docker Join`): under Docker's traceparent
 * if it sent one, else in the trace of the same container's earlier call (plugin-traces.ts).
 */
function tracedCall(traces: PluginTraces, method: string, handler: Handler, body: unknown, headers: http.IncomingHttpHeaders): Promise<unknown> {
  const call = method.slice(method.lastIndexOf('.') + 1);
  const b = (body ?? {}) as { NetworkID?: unknown; Address?: unknown; PoolID?: unknown };
  const attributes: Record<string, string> = { 'rpc.system': 'docker-plugin', 'rpc.method': call };
  if (typeof b.NetworkID === 'string') attributes[attr.network] = b.NetworkID;
  if (typeof b.Address === 'string' && b.Address) attributes[attr.address] = b.Address;
  const parent = headers.traceparent ? contextFrom(headers as Record<string, string>) : traces.parent(call, body);
  return withSpan(`docker ${call}`, { kind: SpanKind.SERVER, parent, attributes }, async (span) => {
    const out = await handler(body);
    const given = (out as { Address?: unknown } | undefined)?.Address;
    if (typeof given === 'string' && given) span.setAttribute(attr.address, given);
    traces.done(call, body, out, span.spanContext());
    return out;
  });
}

export function createPluginServer(routes: Routes, log: (m: string) => void): http.Server {
  const traces = new PluginTraces();
  return http.createServer((req, res) => {
    const send = (code: number, body: unknown) => {
      const s = JSON.stringify(body);
      res.writeHead(code, { 'content-type': CONTENT_TYPE, 'content-length': Buffer.byteLength(s) });
      res.end(s);
    };
    const method = (req.url ?? '').split('?')[0]!;
    const handler = routes[method];
    const errField = method.startsWith('/IpamDriver.') ? 'Error' : 'Err';
    if (req.method !== 'POST' || !handler) {
      send(404, { Err: `${method} is not implemented by the ${plugin.PLUGIN_NAME} plugin` });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      void (async () => {
        try {
          if (size > MAX_BODY) throw new InvalidArgumentError('request body too large');
          const text = Buffer.concat(chunks).toString('utf8').trim();
          const body = text === '' ? {} : JSON.parse(text);
          const out = tracingOn() ? await tracedCall(traces, method, handler, body, req.headers) : await handler(body);
          send(200, out ?? {});
        } catch (e) {
          const msg = errorText(e);
          logWarn(log, `${method} failed: ${msg}`);
          send(200, { [errField]: msg });
        }
      })();
    });
  });
}

/**
 * Listens on `<dir>/underlay.sock`, replacing a stale socket file left by a previous run. The socket is
 * mode 0600 whatever the umask (Docker, root, is its only client): made so by chmod right after listen.
 */
export async function listenOnSocket(server: http.Server, dir: string, name = plugin.PLUGIN_NAME): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  const sock = path.join(dir, `${name}.sock`);
  try {
    const st = fs.lstatSync(sock);
    if (st.isSocket() || st.isFile()) fs.unlinkSync(sock);
  } catch {
    /* none */
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // The socket is made 0600 as it is bound (the bind happens inside listen(), synchronously): no moment in which
    // another local user could connect and act as Docker for this node. The chmod below makes sure of it.
    const umask = process.umask(0o177);
    try {
      server.listen(sock, () => resolve());
    } finally {
      process.umask(umask);
    }
  });
  try {
    fs.chmodSync(sock, 0o600);
  } catch (e) {
    server.close();
    throw e;
  }
  return sock;
}
