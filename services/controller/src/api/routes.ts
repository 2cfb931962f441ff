/**
 * The API's routes: one table that the server dispatches on and /openapi.json is generated from
 * (services/controller/src/openapi.ts), so every route is documented with the schemas it really uses.
 */
import type * as http from 'node:http';
import { z } from 'zod';
import { HEALTHY, answerMetrics, sleep, logWarn } from '@underlay/adapters';
import {
  ApiError,
  Backoff,
  ClusterEvent,
  EndpointList,
  EndpointQuery,
  EVENTS_FOLLOW_POLL_MS,
  PAGE_DEFAULT,
  PAGE_MAX,
  EventsPage,
  EventsQuery,
  Health,
  IpamCheck,
  IpamDescribe,
  IpamReleaseRequest,
  IpamReleaseResponse,
  IpamUsage,
  NetworkCreateRequest,
  NetworkCreateResponse,
  NetworkDetail,
  NetworkList,
  NetworkName,
  NodeList,
  PageQuery,
  VersionInfo,
  describe as describeState,
  endpointPage,
  ipamCheck,
  ipamUsage,
  networkInspect,
  networkList,
  nodeList,
  parseNetworkOptions,
  type BackoffPolicy,
  type ViewInput,
} from '@underlay/core';
import type { ApiDeps, RequestTrace } from './deps.js';
import { HttpError, parseWith, readJsonBody } from './http.js';
import { resolveLimits, type HttpLimits } from './limits.js';
import { traceEvents } from './trace-events.js';
import { CONTROLLER_VERSION } from '../version.js';

export type Method = 'GET' | 'POST' | 'DELETE';

export interface RouteContext {
  deps: ApiDeps;
  req: http.IncomingMessage;
  res: http.ServerResponse;
  params: Record<string, string>;
  query: Record<string, string>;
  /** Who the request acts as: `user:<name of the bearer token>` (headers such as X-Underlay-User are not trusted). */
  actor: string;
  opts: ApiRuntime;
  /** Tracing on: the request's SERVER span and route (http-api.ts sets them), for the writes it makes. */
  trace?: RequestTrace;
}

/** A handler's answer; `undefined` when it wrote the response itself (a stream). */
export interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export interface ResponseSpec {
  description: string;
  /** A body that is not JSON (the metrics exposition): its media type; the handler writes it itself. */
  mediaType?: string;
  /** The JSON body. */
  schema?: z.ZodType;
  /** Another representation of the same status (the NDJSON event stream): its media type and the schema of each line. */
  alternative?: { mediaType: string; schema: z.ZodType };
}

export interface RouteSpec {
  method: Method;
  /** OpenAPI path template: /v1/networks/{name}. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  /** Needs the bearer token (every /v1 route). */
  auth: boolean;
  params?: Record<string, { schema: z.ZodType; description: string }>;
  query?: z.ZodObject;
  body?: z.ZodType;
  responses: Record<number, ResponseSpec>;
  handle(ctx: RouteContext): Promise<Reply | undefined>;
}

export interface HttpApiOptions {
  /** How often a follow stream polls the log. */
  followPollMs?: number;
  /** The clock of the views (Ready/NotReady, last seen). */
  now?: () => number;
  /** Where unexpected errors (500s) are logged. */
  logger?: (msg: string) => void;
  /** Timeouts, sizes and counts (api/limits.ts has the defaults and bounds). */
  limits?: Partial<HttpLimits>;
  /** Serve HTTPS with this certificate chain and key (PEM). */
  tls?: { cert: string | Buffer; key: string | Buffer };
}

/** Counts open follow streams and refuses one more than `max` (503). */
export class FollowGate {
  open = 0;
  constructor(readonly max: number) {}
  /** Takes a slot; the returned function gives it back (once). */
  acquire(): () => void {
    if (this.open >= this.max) {
      throw new HttpError(503, 'unavailable', `too many event streams are open on this controller (at most ${this.max}, --events-follow-max); try again later`, undefined, { 'retry-after': '5' });
    }
    this.open++;
    let released = false;
    return () => {
      if (!released) this.open--;
      released = true;
    };
  }
}

/** The options of a running API: defaults filled in, limits bounded, the follow streams' gate. */
export interface ApiRuntime {
  followPollMs: number;
  now: () => number;
  logger: (msg: string) => void;
  limits: HttpLimits;
  follows: FollowGate;
}

const err = (description: string): ResponseSpec => ({ description, schema: ApiError });

/** `/readyz`'s body. */
export const Readiness = z.object({
  ready: z.boolean(),
  checks: z.record(z.string(), z.object({ ok: z.boolean(), detail: z.string().optional() })),
});
const unauthorized = { 401: err('no bearer token, or not the right one') };

const views = (ctx: RouteContext): ViewInput => ({ state: ctx.deps.state(), seen: ctx.deps.nodes.all(), nowMs: ctx.opts.now() });

const nameParam = { name: { schema: NetworkName, description: 'the network name' } };

function networkName(ctx: RouteContext): string {
  return parseWith(NetworkName, ctx.params.name, 'name');
}

/** The most event JSON one `GET /v1/events` page holds (at least one event). */
export const EVENTS_PAGE_MAX_BYTES = 16 * 1024 * 1024;

/** A follow stream that cannot read the log tries again after these delays. */
const FOLLOW_READ_RETRY: BackoffPolicy = { minMs: 1_000, maxMs: 5_000 };

/** Events a follow stream reads from the log at a time. */
const FOLLOW_PAGE = 100;

/** Resolves true once `res` drained, false when it did not within `ms` (or closed). */
function drained(res: http.ServerResponse, ms: number): Promise<boolean> {
  return new Promise<boolean>((r) => {
    const done = (ok: boolean) => {
      clearTimeout(t);
      res.off('drain', onDrain);
      res.off('close', onClose);
      r(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const t = setTimeout(() => done(false), ms);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

/**
 * `GET /v1/events?follow=true`: every event after `since`, then each new one, one JSON object per line.
 * At most `limits.followMax` streams at once (more: 503); each ends after `limits.followMaxMs` (the CLI
 * opens it again after the last event it got); a client that takes nothing for `limits.followStallMs`
 * while the socket's buffers are full is disconnected, so nothing piles up for it.
 */
async function followEvents(ctx: RouteContext, since: number, trace?: string): Promise<undefined> {
  const { res, opts } = ctx;
  const release = opts.follows.acquire();
  let closed = false;
  // Aborted when the stream ends: ends the pump's wait at once.
  const ended = new AbortController();
  // The stream's one deadline (not a retry).
  const expiry = setTimeout(() => {
    closed = true;
    ended.abort();
  }, opts.limits.followMaxMs);
  try {
    // A quiet stream sends nothing for long stretches: the socket's inactivity timeout does not apply to it.
    ctx.req.socket.setTimeout(0);
    res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    res.flushHeaders();
    res.on('close', () => {
      closed = true;
      ended.abort();
    });
    await pump(ctx, since, () => closed, ended.signal, trace);
  } finally {
    clearTimeout(expiry);
    release();
    if (!res.writableEnded && !res.destroyed) res.end();
  }
  return undefined;
}

async function pump(ctx: RouteContext, since: number, isClosed: () => boolean, signal: AbortSignal, trace?: string): Promise<void> {
  const { res, deps, opts } = ctx;
  let cursor = since;
  const readRetry = new Backoff(FOLLOW_READ_RETRY);
  // Events per read: what one stream may hold in memory at once (an event may be a few hundred KB).
  const page = FOLLOW_PAGE;
  while (!isClosed()) {
    let events;
    try {
      events = await deps.log.readAll(cursor + 1, page, { fromFirstKept: true }); // a trimmed start begins at the first kept event
      readRetry.reset();
    } catch (e) {
      const delayMs = readRetry.next();
      logWarn(opts.logger, `events stream: cannot read the log: ${(e as Error).message}; retrying in ${delayMs} ms`);
      await sleep(delayMs, signal);
      continue;
    }
    for (const e of events) {
      if (isClosed()) return;
      cursor = e.seq;
      if (trace && e.traceId !== trace) continue;
      if (res.write(`${JSON.stringify(e)}\n`)) continue;
      if (!(await drained(res, opts.limits.followStallMs)) && !res.destroyed) {
        opts.logger(`events stream: the client took nothing for ${opts.limits.followStallMs} ms (--events-follow-stall-ms); disconnected it`);
        res.destroy();
        return;
      }
    }
    if (events.length < page && !isClosed()) await sleep(opts.followPollMs, signal);
  }
}

/** Every route but /openapi.json (which http-api.ts adds, as it serves the document built from this table). */
export const apiRoutes: RouteSpec[] = [
  {
    method: 'GET',
    path: '/healthz',
    operationId: 'health',
    summary: 'Liveness and role of this controller (no token needed)',
    auth: false,
    responses: { 200: { description: 'this controller is running', schema: Health } },
    async handle({ deps }) {
      return { status: 200, body: { ...HEALTHY, ok: true, ...deps.status(), seq: deps.state().seq } };
    },
  },
  {
    method: 'GET',
    path: '/readyz',
    operationId: 'ready',
    summary: 'Readiness: etcd reachable and a leader known (no token needed)',
    description: 'Each check with `ok` and a `detail`; etcd must answer a read of the leader key within 2 s (or --etcd-timeout-ms if shorter).',
    auth: false,
    responses: {
      200: { description: 'ready', schema: Readiness },
      503: { description: 'not ready: the failing checks say why', schema: Readiness },
    },
    async handle({ deps }) {
      const r = await deps.telemetry.readiness();
      return { status: r.ready ? 200 : 503, body: r };
    },
  },
  {
    method: 'GET',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics (no token needed)',
    description: 'Prometheus text format 0.0.4; OpenMetrics 1.0 (with trace_id exemplars) when the Accept header asks for `application/openmetrics-text`.',
    auth: false,
    responses: { 200: { description: 'the exposition', mediaType: 'text/plain; version=0.0.4' } },
    async handle({ deps, req, res }) {
      await answerMetrics(req, res, deps.telemetry.registry);
      return undefined;
    },
  },
  {
    method: 'GET',
    path: '/v1/networks',
    operationId: 'listNetworks',
    summary: 'Cluster networks, with their hosts and endpoint counts',
    auth: true,
    responses: { 200: { description: 'every cluster network, by name', schema: NetworkList }, ...unauthorized },
    async handle(ctx) {
      return { status: 200, body: { networks: networkList(views(ctx)) } };
    },
  },
  {
    method: 'POST',
    path: '/v1/networks',
    operationId: 'createNetwork',
    summary: 'Define a cluster network; every agent creates it in its Docker',
    description:
      'Like `docker network create -d underlay --ipam-driver underlay`, once for the cluster. 201 when created; 200 when a network of that name exists with the same definition; 409 (with the difference) when it exists with another. Leader only: a standby answers 503.',
    auth: true,
    body: NetworkCreateRequest,
    responses: {
      201: { description: 'created', schema: NetworkCreateResponse },
      200: { description: 'the same network already exists', schema: NetworkCreateResponse },
      400: err('the body is not valid JSON or fails validation; `field` names the wrong part'),
      ...unauthorized,
      409: err('a network of that name exists with another definition, or a subnet overlaps'),
      413: err('the body is larger than the limit (--http-max-body-bytes, 1 MiB by default); refused before it is read'),
      503: err('this controller is a standby'),
    },
    async handle(ctx) {
      const body = parseWith(NetworkCreateRequest, await readJsonBody(ctx.req, ctx.opts.limits.maxBodyBytes));
      const { name, ...definition } = body;
      try {
        parseNetworkOptions(definition.options, { internal: definition.internal, ipv6: definition.ipv6 });
      } catch (e) {
        throw new HttpError(400, 'invalid-argument', `options: ${(e as Error).message}`, 'options', {}, e);
      }
      const { created } = await ctx.deps.createNetwork(name, definition, ctx.actor, ctx.trace);
      const network = networkInspect(views(ctx), name);
      if (!network) throw new HttpError(500, 'internal', `network ${name} was ${created ? 'created' : 'found'} but is not in the state`);
      return { status: created ? 201 : 200, body: { created, network }, headers: { location: `/v1/networks/${encodeURIComponent(name)}` } };
    },
  },
  {
    method: 'GET',
    path: '/v1/networks/{name}',
    operationId: 'inspectNetwork',
    summary: 'One cluster network: definition, every host\'s replica, its endpoints a page at a time',
    description: `The endpoints are paged: at most \`limit\` (${PAGE_DEFAULT} by default, at most ${PAGE_MAX}); when more follow, the answer has \`continue\`: pass it back unchanged as the \`continue\` query parameter for the next page (GET /v1/endpoints?network=NAME pages the same rows).`,
    auth: true,
    params: nameParam,
    query: PageQuery,
    responses: { 200: { description: 'the network', schema: NetworkDetail }, 400: err('not a network name, or a bad limit or continue'), ...unauthorized, 404: err('no such network') },
    async handle(ctx) {
      const name = networkName(ctx);
      const n = networkInspect(views(ctx), name, parseWith(PageQuery, ctx.query));
      if (!n) throw new HttpError(404, 'not-found', `network ${name} not found`);
      return { status: 200, body: n };
    },
  },
  {
    method: 'DELETE',
    path: '/v1/networks/{name}',
    operationId: 'removeNetwork',
    summary: 'Remove a cluster network from every host',
    description: 'Refused (409) while an endpoint on any host uses it, naming the hosts and containers. Leader only: a standby answers 503.',
    auth: true,
    params: nameParam,
    responses: {
      204: { description: 'removed' },
      400: err('not a network name'),
      ...unauthorized,
      404: err('no such network'),
      409: err('endpoints are still attached (hosts and containers named)'),
      503: err('this controller is a standby'),
    },
    async handle(ctx) {
      await ctx.deps.removeNetwork(networkName(ctx), ctx.actor, ctx.trace);
      return { status: 204 };
    },
  },
  {
    method: 'GET',
    path: '/v1/endpoints',
    operationId: 'listEndpoints',
    summary: 'Endpoint addresses: host, container, network and state, a page at a time',
    description: `Sorted by network, family, address, node and endpoint id. At most \`limit\` rows (${PAGE_DEFAULT} by default, at most ${PAGE_MAX}); when more follow, the answer has \`continue\`: pass it back unchanged as the \`continue\` query parameter (with the same filters) for the next page. The token is the last row's position, not an offset: endpoints added or removed meanwhile shift nothing.`,
    auth: true,
    query: EndpointQuery,
    responses: { 200: { description: 'one entry per endpoint address', schema: EndpointList }, 400: err('bad query (filters, limit or continue)'), ...unauthorized },
    async handle(ctx) {
      const { network, node, ...page } = parseWith(EndpointQuery, ctx.query);
      return { status: 200, body: endpointPage(views(ctx), { network, node }, page) };
    },
  },
  {
    method: 'GET',
    path: '/v1/version',
    operationId: 'version',
    summary: 'This controller\'s version (what underlay version prints)',
    auth: true,
    responses: { 200: { description: 'the version, the API version and which controller answered', schema: VersionInfo }, ...unauthorized },
    async handle({ deps }) {
      const { role, name } = deps.status();
      return { status: 200, body: { version: CONTROLLER_VERSION, api: 'v1', name, role } };
    },
  },
  {
    method: 'GET',
    path: '/v1/nodes',
    operationId: 'listNodes',
    summary: 'Nodes: Ready or NotReady (lease), last seen, address, version, network states',
    auth: true,
    responses: { 200: { description: 'every node registered or reporting', schema: NodeList }, ...unauthorized },
    async handle(ctx) {
      return { status: 200, body: { nodes: nodeList(views(ctx)) } };
    },
  },
  {
    method: 'GET',
    path: '/v1/ipam/usage',
    operationId: 'ipamUsage',
    summary: 'Address use per pool and per block, the blocks a page at a time',
    description: `Every pool with its counts (\`blockCount\`: all its blocks), and the blocks of all pools in order a page at a time: at most \`limit\` blocks (${PAGE_DEFAULT} by default, at most ${PAGE_MAX}); a pool lists those of its blocks that are in the page. When more blocks follow, the answer has \`continue\`: pass it back unchanged as the \`continue\` query parameter for the next page.`,
    auth: true,
    query: PageQuery,
    responses: { 200: { description: 'every pool, with its blocks in this page', schema: IpamUsage }, 400: err('bad limit or continue'), ...unauthorized },
    async handle(ctx) {
      return { status: 200, body: ipamUsage(ctx.deps.state(), parseWith(PageQuery, ctx.query)) };
    },
  },
  {
    method: 'GET',
    path: '/v1/ipam/check',
    operationId: 'ipamCheck',
    summary: 'The cluster IPAM against what every host\'s Docker reports',
    description:
      'Allocations with no container, containers with no allocation, addresses held twice and blocks whose node is gone, from the cluster state and each node\'s latest report (any controller answers). Addresses a node holds for a container\'s restart are listed apart, and allocations newer than their node\'s latest report are counted as pending, not judged. `clean` is true when nothing was found.',
    auth: true,
    responses: { 200: { description: 'the findings', schema: IpamCheck }, ...unauthorized },
    async handle(ctx) {
      return { status: 200, body: ipamCheck(views(ctx)) };
    },
  },
  {
    method: 'POST',
    path: '/v1/ipam/release',
    operationId: 'ipamRelease',
    summary: 'Release one endpoint address (an operator\'s repair of a leak)',
    description:
      'Frees an endpoint address with an AddressReleased event (reason `operator release`, the token\'s name as actor). Refused (409) while any node\'s latest report shows an endpoint or container with it (naming the container and host), while its node holds it for a container\'s restart, for a gateway or --aux-address reservation, and when its node has not reported since this controller started. `network` is needed when the address is allocated in several address spaces (400 otherwise). Leader only: a standby answers 503. Only this API (its bearer token) may release another node\'s address; an agent may release only its own.',
    auth: true,
    body: IpamReleaseRequest,
    responses: {
      200: { description: 'released', schema: IpamReleaseResponse },
      400: err('not an address, or allocated in several address spaces and no network named'),
      ...unauthorized,
      404: err('the address is not allocated (on that network), or no such network'),
      409: err('a container (or endpoint) holds it, its node holds it for a restart, it is a reservation, or its node has not reported'),
      413: err('the body is larger than the limit'),
      503: err('this controller is a standby'),
    },
    async handle(ctx) {
      const body = parseWith(IpamReleaseRequest, await readJsonBody(ctx.req, ctx.opts.limits.maxBodyBytes));
      const released = await ctx.deps.releaseAddress({ address: body.address, ...(body.network ? { network: body.network } : {}) }, ctx.actor, ctx.trace);
      return { status: 200, body: released };
    },
  },
  {
    method: 'GET',
    path: '/v1/ipam',
    operationId: 'ipamState',
    summary: 'The raw folded IPAM state (leader only)',
    auth: true,
    responses: { 200: { description: 'describe() of the state', schema: IpamDescribe }, ...unauthorized, 503: err('this controller is a standby') },
    async handle(ctx) {
      if (ctx.deps.status().role !== 'leader') throw new HttpError(503, 'unavailable', 'this controller is a standby; ask the leader');
      return { status: 200, body: describeState(ctx.deps.state()) };
    },
  },
  {
    method: 'GET',
    path: '/v1/events',
    operationId: 'readEvents',
    summary: 'The event log: a page of events after `since`, or with follow=true a stream of them',
    description:
      'Without follow: `{events, next}` with at most `limit` events after `since` (pass `next` as `since` to read on). With follow=true: `application/x-ndjson`, one event per line, every event after `since` and then each new one as it is committed, until the client disconnects or the stream reaches its maximum duration (--events-follow-max-ms, 1 h by default; read on from the last event). At most --events-follow-max streams (32 by default) at once: more are answered 503. A client that reads nothing for --events-follow-stall-ms (30 s) while the stream waits is disconnected. With trace=ID only that trace\'s events, filtered by the controller (in pages and in a follow stream); in a page, `next` is then the last event read, matched or not (read on until it stops moving).',
    auth: true,
    query: EventsQuery,
    responses: {
      200: {
        description: 'a page of events; with follow=true, an NDJSON stream of events',
        schema: EventsPage,
        alternative: { mediaType: 'application/x-ndjson', schema: ClusterEvent },
      },
      400: err('bad since, limit, follow or trace'),
      ...unauthorized,
      503: err('with follow=true: too many streams are open (--events-follow-max)'),
    },
    async handle(ctx) {
      const q = parseWith(EventsQuery, ctx.query);
      if (q.follow) return followEvents(ctx, q.since, q.trace);
      if (q.trace) return { status: 200, body: await traceEvents(ctx.deps.log, q.trace, q.since, { limit: q.limit, maxBytes: EVENTS_PAGE_MAX_BYTES }) };
      // A trimmed start begins at the first kept event; a page holds at most EVENTS_PAGE_MAX_BYTES of events (pass
      // `next` as `since` to read on), so one request cannot make the controller build an answer of any size.
      const events = await ctx.deps.log.readAll(q.since + 1, q.limit, { fromFirstKept: true, maxBytes: EVENTS_PAGE_MAX_BYTES });
      return { status: 200, body: { events, next: events.length ? events[events.length - 1]!.seq : q.since } };
    },
  },
];

export function defaultOptions(o: HttpApiOptions): ApiRuntime {
  const limits = resolveLimits(o.limits);
  return {
    followPollMs: o.followPollMs ?? EVENTS_FOLLOW_POLL_MS,
    now: o.now ?? Date.now,
    logger: o.logger ?? (() => {}),
    limits,
    follows: new FollowGate(limits.followMax),
  };
}
