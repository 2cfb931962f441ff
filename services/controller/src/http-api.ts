/**
 * The controller's JSON HTTP API (every controller serves it; writes need the leader):
 *
 *   GET  /healthz                 role, name, seq (no token)
 *   GET  /openapi.json            OpenAPI 3.1, generated from the zod schemas (no token)
 *   GET  /v1/networks             POST /v1/networks           GET|DELETE /v1/networks/{name}
 *   GET  /v1/endpoints            GET  /v1/nodes              GET /v1/ipam/usage     GET /v1/ipam
 *   GET  /v1/events?since=SEQ&limit=N[&follow=true]
 *
 * Every /v1 route needs `Authorization: Bearer <token>`. Bodies and queries are validated with the
 * schemas of libs/core/src/protocol/api.ts; a failure is a 400 naming the field. Routes: api/routes.ts.
 */
import * as http from 'node:http';
import type { ApiDeps } from './api/deps.js';
import { HttpError, checkBearer, sendError, sendJson, toHttpError } from './api/http.js';
import { apiRoutes, defaultOptions, type HttpApiOptions, type RouteContext, type RouteSpec } from './api/routes.js';
import { OpenApiDocument, openApiDocument } from './openapi.js';

export type { HttpApiOptions } from './api/routes.js';

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

/** A request's path without its query, for logs. */
const pathOf = (req: http.IncomingMessage) => (req.url ?? '/').split('?')[0];

/** `user:<X-Underlay-User>` when the header is a plain name (the CLI sends the local user), else `user:api`. */
function actorOf(req: http.IncomingMessage): string {
  const u = req.headers['x-underlay-user'];
  return typeof u === 'string' && /^[A-Za-z0-9_.@-]{1,64}$/.test(u) ? `user:${u}` : 'user:api';
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

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://controller');
    const path = url.pathname;
    // Every /v1 request needs the token, whatever its path or method.
    if (path === '/v1' || path.startsWith('/v1/')) checkBearer(req.headers.authorization, deps.token);
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
    const ctx: RouteContext = { deps, req, res, params, query: Object.fromEntries(url.searchParams), actor: actorOf(req), opts };
    const reply = await hit.c.spec.handle(ctx);
    if (reply) sendJson(res, reply.status, reply.body, reply.headers);
  };

  return http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (toHttpError(e).status >= 500) opts.logger(`HTTP ${req.method} ${pathOf(req)}: ${(e as Error).message ?? e}`);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendError(res, e);
    });
  });
}
