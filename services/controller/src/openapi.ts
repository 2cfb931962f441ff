/**
 * /openapi.json: an OpenAPI 3.1 document generated from the route table (api/routes.ts) and the zod
 * schemas the API validates with (libs/core/src/protocol/api.ts), via z.toJSONSchema. Request bodies
 * are described as they are accepted (io "input": defaults optional), answers as they are sent.
 */
import { z } from 'zod';
import {
  ApiError,
  ApiSubnet,
  BlockUsage,
  ClusterEvent,
  EndpointList,
  EndpointView,
  EventsPage,
  Health,
  IpamCheck,
  IpamDescribe,
  IpamReleaseRequest,
  IpamReleaseResponse,
  IpamUsage,
  NetworkCreateRequest,
  NetworkCreateResponse,
  NetworkDefinition,
  NetworkDetail,
  NetworkHost,
  NetworkList,
  NetworkStatus,
  NetworkSummary,
  NodeList,
  NodeView,
  PoolUsage,
  SubnetConfig,
} from '@underlay/core';
import type { RouteSpec } from './api/routes.js';

export const API_VERSION = '1.0.0';

/** What /openapi.json answers, as far as its own description goes. */
export const OpenApiDocument = z.looseObject({ openapi: z.literal('3.1.0'), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.unknown()) });
const REF = '#/components/schemas/';

type JsonSchema = Record<string, unknown>;

/** Schemas with a name in components.schemas: answers (as sent) and request bodies (as accepted). */
const outputSchemas: Record<string, z.ZodType> = {
  ApiError,
  Health,
  IpamDescribe,
  SubnetConfig,
  NetworkDefinition,
  NetworkHost,
  NetworkSummary,
  NetworkList,
  EndpointView,
  EndpointList,
  NetworkDetail,
  NetworkCreateResponse,
  NetworkStatus,
  NodeView,
  NodeList,
  BlockUsage,
  PoolUsage,
  IpamUsage,
  IpamCheck,
  IpamReleaseResponse,
  ClusterEvent,
  EventsPage,
};
const inputSchemas: Record<string, z.ZodType> = {
  NetworkCreateRequest,
  NetworkCreateSubnet: ApiSubnet,
  IpamReleaseRequest,
};

/** Strips what a schema inside the document does not need ($schema, $id). */
function clean(s: JsonSchema): JsonSchema {
  const { $schema: _s, $id: _i, ...rest } = s;
  return rest;
}

function componentSchemas(): Record<string, JsonSchema> {
  const build = (schemas: Record<string, z.ZodType>, io: 'input' | 'output') => {
    const reg = z.registry<{ id: string }>();
    for (const [id, s] of Object.entries(schemas)) reg.add(s, { id });
    const out = z.toJSONSchema(reg, { io, uri: (id) => `${REF}${id}`, unrepresentable: 'any' }) as { schemas: Record<string, JsonSchema> };
    return Object.fromEntries(Object.entries(out.schemas).map(([k, v]) => [k, clean(v)]));
  };
  return { ...build(outputSchemas, 'output'), ...build(inputSchemas, 'input') };
}

/** The component a route's schema is, or the schema inlined. */
function schemaRef(s: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const names = io === 'output' ? outputSchemas : inputSchemas;
  const name = Object.entries(names).find(([, v]) => v === s)?.[0];
  if (name) return { $ref: `${REF}${name}` };
  return clean(z.toJSONSchema(s, { io, unrepresentable: 'any' }) as JsonSchema);
}

export function openApiDocument(routes: readonly RouteSpec[]): JsonSchema {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const parameters: unknown[] = [];
    for (const [name, p] of Object.entries(r.params ?? {})) {
      parameters.push({ name, in: 'path', required: true, description: p.description, schema: schemaRef(p.schema, 'input') });
    }
    if (r.query) {
      const q = z.toJSONSchema(r.query, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, JsonSchema>; required?: string[] };
      for (const [name, schema] of Object.entries(q.properties ?? {})) {
        const { description, ...rest } = schema as { description?: string };
        parameters.push({ name, in: 'query', required: (q.required ?? []).includes(name), ...(description ? { description } : {}), schema: rest });
      }
    }
    const responses: Record<string, unknown> = {};
    for (const [status, spec] of Object.entries(r.responses)) {
      const content: Record<string, unknown> = {};
      if (spec.schema) content['application/json'] = { schema: schemaRef(spec.schema, 'output') };
      if (spec.mediaType) content[spec.mediaType] = { schema: { type: 'string' } };
      if (spec.alternative) content[spec.alternative.mediaType] = { schema: schemaRef(spec.alternative.schema, 'output') };
      responses[status] = { description: spec.description, ...(Object.keys(content).length ? { content } : {}) };
    }
    const op: Record<string, unknown> = {
      operationId: r.operationId,
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      ...(r.auth ? {} : { security: [] }),
      ...(parameters.length ? { parameters } : {}),
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: schemaRef(r.body, 'input') } } } } : {}),
      responses,
    };
    paths[r.path] = { ...(paths[r.path] ?? {}), [r.method.toLowerCase()]: op };
  }
  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'underlay controller API',
      version: API_VERSION,
      description:
        'Cluster networks, endpoints, nodes, IPAM usage and the event log of an underlay cluster. Every /v1 route needs `Authorization: Bearer TOKEN`, one of the controller\'s named tokens (--api-token-file: `NAME TOKEN` lines; --api-token is named api); the token\'s name is the actor (`user:NAME`) of the events a request causes. Errors are `{"error": {"code", "message", "field"?}}`. Limits: request headers within 10 s, whole requests within 30 s, bodies up to 1 MiB (a larger Content-Length is refused before it is read), 256 connections, 32 follow streams of at most 1 h (the controller\'s --http-* and --events-follow-* flags).',
    },
    security: [{ bearerAuth: [] }],
    paths,
    components: {
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'one of the controller\'s named API tokens (--api-token-file, or --api-token named api); its name is the actor of the request' },
      },
      schemas: componentSchemas(),
    },
  };
}
