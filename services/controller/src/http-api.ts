/**
 * The controller's JSON HTTP API (every controller serves it; writes need the leader):
 *
 *   GET  /healthz                 status "ok", role, name, seq (no token)
 *   GET  /readyz                  etcd reachable and a leader known: 200, or 503 naming the failing check (no token)
 *   GET  /metrics                 Prometheus text, or OpenMetrics by Accept (no token; services/controller/src/metrics.ts)
 *   GET  /openapi.json            OpenAPI 3.1, generated from the zod schemas (no token)
 *   GET  /v1/networks             POST /v1/networks           GET|DELETE /v1/networks/{name}
 *   GET  /v1/endpoints            GET  /v1/nodes              GET /v1/ipam/usage     GET /v1/ipam
 *   GET  /v1/events?since=SEQ&limit=N[&follow=true]
 *   GET  /v1/version              the controller's version (what `underlay version` prints)
 *
 * Every /v1 route needs `Authorization: Bearer <token>` (one of the named tokens; its name is the actor of
 * the request's events). Bodies and queries are validated with the schemas of libs/core/src/protocol/api.ts;
 * a failure is a 400 naming the field. Routes: api/routes.ts.
 *
 * HTTP or HTTPS (options.tls). No client can stop the server or hold it: headers, request and idle
 * timeouts, a header size limit, a connection limit, bodies refused before they are read (api/http.ts),
 * capped follow streams (api/routes.ts); api/limits.ts has the numbers. A handler's error is a 500 with
 * its message, logged; it never escapes.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { InvalidArgumentError } from '@underlay/core';
import { SpanKind, contextFrom, secondsSince, tracingOn, withSpan, logError } from '@underlay/adapters';
import type { ApiDeps } from './api/deps.js';
import { HttpError, checkBearer, sendError, sendJson, toHttpError } from './api/http.js';
import { apiRoutes, defaultOptions, type HttpApiOptions, type RouteContext, type RouteSpec } from './api/routes.js';
import { OpenApiDocument, openApiDocument } from './openapi.js';

export type { HttpApiOptions } from './api/routes.js';
export type { HttpLimits } from './api/limits.js';
export { HTTP_LIMITS } from './api/limits.js';

/** A route's handler in a SERVER span `<METHOD> <route>`, a child of the request's `traceparent` when it has one. */
function tracedRoute(req: http.IncomingMessage, spec: RouteSpec, ctx: RouteContext): ReturnType<RouteSpec['handle']> {
  const route = `${req.method} ${spec.path}`;
  const attributes = { 'http.request.method': req.method ?? '', 'http.route': spec.path, 'url.path': pathOf(req) };
  return withSpan(route, { kind: SpanKind.SERVER, parent: contextFrom(req.headers), operation: route, attributes }, async (span) => {
    const reply = await spec.handle({ ...ctx, trace: { span: span.spanContext(), operation: route } });
    span.setAttribute('http.response.status_code', reply ? reply.status : 200);
    return reply;
  });
}

interface CompiledRoute {
  spec: RouteSpec;
  pattern: RegExp;
  names: string[];
}

function compile(spec: RouteSpec): CompiledRoute {
  const names: string[] = [];
  const source = spec.path
    .split(/(\{\w+\})/)
    .map((part) => {
      const param = /^\{(\w+)\}$/.exec(part);
      if (param) {
        names.push(param[1]!);
        return '([^/]+)';
      }
      return part.replace(/[.*+?^$()|[\]\\]/g, '\\$&');
    })
    .join('');
  return { spec, pattern: new RegExp(`^${source}$`), names };
}

/**
 * The API's certificate chain and key (`--tls-cert`, `--tls-key`), read and tried together, so a missing
 * file, a file that is not PEM or a key that does not match the certificate is one clear line at start.
 */
export function readTlsFiles(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  const read = (file: string, flag: string) => {
    try {
      return fs.readFileSync(file);
    } catch (e) {
      throw new InvalidArgumentError(`${flag}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
    }
  };
  const cert = read(certFile, '--tls-cert');
  const key = read(keyFile, '--tls-key');
  try {
    tls.createSecureContext({ cert, key });
  } catch (e) {
    throw new InvalidArgumentError(`--tls-cert ${certFile} and --tls-key ${keyFile} cannot be used together: ${(e as Error).message}`, { cause: e });
  }
  return { cert, key };
}

/** A request's path without its query, for logs. */
const pathOf = (req: http.IncomingMessage) => (req.url ?? '/').split('?')[0];

/** Logs at most one line per `ms` about a recurring condition, with how many times it happened. */
function throttled(logger: (m: string) => void, ms: number) {
  let last = 0;
  let count = 0;
  return (msg: (n: number) => string) => {
    count++;
    const now = Date.now();
    if (now - last < ms) return;
    last = now;
    logger(msg(count));
    count = 0;
  };
}

export function createHttpApi(deps: ApiDeps, options: HttpApiOptions = {}): http.Server {
  const opts = defaultOptions(options);
  let document: unknown;
  const openapiRoute: RouteSpec = {
    method: 'GET',
    path: '/openapi.json',
    operationId: 'openapi',
    summary: 'This document (no token needed)',
    auth: false,
    responses: { 200: { description: 'the OpenAPI 3.1 document', schema: OpenApiDocument } },
    async handle() {
      document ??= openApiDocument(routes);
      return { status: 200, body: document };
    },
  };
  const routes: RouteSpec[] = [...apiRoutes.filter((r) => !r.auth), openapiRoute, ...apiRoutes.filter((r) => r.auth)];
  const compiled = routes.map(compile);

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse, seen: { route: string }): Promise<void> => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://controller');
    } catch {
      throw new HttpError(400, 'invalid-argument', 'the request target is not a valid path');
    }
    const path = url.pathname;
    // The route pattern of the metrics' label, also for a request refused before dispatch (401).
    const labelled = compiled.find((c) => c.spec.method === req.method && c.pattern.test(path));
    if (labelled) seen.route = labelled.spec.path;
    // Every /v1 request needs a token, whatever its path or method; its name is the actor.
    let actor = 'user:anonymous';
    if (path === '/v1' || path.startsWith('/v1/')) actor = `user:${checkBearer(req.headers.authorization, deps.tokens)}`;
    const matches = compiled.map((c) => ({ c, m: c.pattern.exec(path) })).filter((x) => x.m);
    if (matches.length === 0) throw new HttpError(404, 'not-found', `no such path: ${path}`);
    const hit = matches.find((x) => x.c.spec.method === req.method);
    if (!hit) {
      const allow = matches.map((x) => x.c.spec.method).join(', ');
      throw new HttpError(405, 'method-not-allowed', `${req.method} is not allowed on ${path}; allowed: ${allow}`, undefined, { allow });
    }
    const params: Record<string, string> = {};
    hit.c.names.forEach((n, i) => {
      try {
        params[n] = decodeURIComponent(hit.m![i + 1]!);
      } catch {
        throw new HttpError(400, 'invalid-argument', `${n}: not a valid path segment`, n);
      }
    });
    const ctx: RouteContext = { deps, req, res, params, query: Object.fromEntries(url.searchParams), actor, opts };
    const reply = tracingOn() ? await tracedRoute(req, hit.c.spec, ctx) : await hit.c.spec.handle(ctx);
    if (reply) sendJson(res, reply.status, reply.body, reply.headers);
  };

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    // underlay_http_requests_total and _duration_seconds: by route pattern (`unmatched` for a path no route has).
    const started = process.hrtime.bigint();
    const seen = { route: 'unmatched' };
    res.once('close', () => deps.telemetry.http?.(seen.route, res.statusCode, secondsSince(started)));
    const fail = (e: unknown) => {
      try {
        // Only failures nobody meant (500): refusals (401, 413, 503…) are answers, and logging them would let any client fill the log.
        if (toHttpError(e).status === 500) logError(opts.logger, `HTTP ${req.method} ${pathOf(req)}: ${(e as Error)?.message ?? e}`);
        if (res.headersSent) res.destroy();
        else sendError(res, e);
      } catch (e2) {
        logError(opts.logger, `HTTP ${req.method} ${pathOf(req)}: cannot answer: ${(e2 as Error)?.message ?? e2}`);
        res.destroy();
      }
    };
    try {
      handle(req, res, seen).catch(fail);
    } catch (e) {
      fail(e);
    }
  };

  const l = opts.limits;
  const serverOptions: http.ServerOptions = {
    headersTimeout: l.headersTimeoutMs,
    requestTimeout: l.requestTimeoutMs,
    keepAliveTimeout: l.idleTimeoutMs,
    maxHeaderSize: l.maxHeaderBytes,
    // How often expired headers and requests are looked for: often enough that the timeouts hold within about a quarter.
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(l.headersTimeoutMs / 4))),
  };
  const server: http.Server = options.tls
    ? (https.createServer({ ...serverOptions, cert: options.tls.cert, key: options.tls.key, handshakeTimeout: l.headersTimeoutMs }, onRequest) as unknown as http.Server)
    : http.createServer(serverOptions, onRequest);
  server.headersTimeout = l.headersTimeoutMs;
  server.requestTimeout = l.requestTimeoutMs;
  server.keepAliveTimeout = l.idleTimeoutMs;
  // A connection with no traffic either way for this long while a request is under way (a client that
  // does not read its answer) is closed; follow streams turn this off and use their stall limit.
  server.timeout = l.requestTimeoutMs;
  server.maxConnections = l.maxConnections;
  // `Expect: 100-continue` (curl's way with bodies over 1 MiB): a declared body over the limit is refused
  // without inviting it; anything else is invited and handled as usual.
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (Number(req.headers['content-length']) > l.maxBodyBytes) {
      sendError(res, new HttpError(413, 'payload-too-large', `the request body is larger than the ${l.maxBodyBytes} bytes allowed`));
      return;
    }
    res.writeContinue();
    onRequest(req, res);
  });
  // A request Node's parser refuses before any handler runs (a head over --http-max-header-bytes, a malformed
  // request line) still gets the API's JSON error, then the connection is closed.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: import('node:stream').Duplex) => {
    if (!socket.writable || (socket as { _httpMessage?: unknown })._httpMessage) {
      socket.destroy();
      return;
    }
    const [status, code, message] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? ([431, 'invalid-argument', `the request head is larger than the ${l.maxHeaderBytes} bytes allowed`] as const)
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? ([408, 'invalid-argument', 'the request took too long to arrive'] as const)
          : ([400, 'invalid-argument', 'the request is not valid HTTP'] as const);
    const body = JSON.stringify(new HttpError(status, code, message).body());
    // An answer to HEAD has no body (the raw packet tells the method when the parser got that far).
    const head = (err as { rawPacket?: Buffer }).rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${head ? '' : body}`,
    );
  });
  const dropped = throttled(opts.logger, 10_000);
  server.on('drop', () => dropped((n) => `HTTP: ${n} connection(s) refused: ${l.maxConnections} are open (--http-max-connections)`));
  return server;
}
