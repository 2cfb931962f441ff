/**
 * The controller's HTTP API for the CLI. Issue 5 adds auth, OpenAPI and the full resource set;
 * for now: health, the event log and the IPAM state.
 */
import * as http from 'node:http';
import { describe as describeState } from '@underlay/core';
import type { ApiDeps } from './api/deps.js';

export function createHttpApi(deps: ApiDeps): http.Server {
  const { log, status } = deps;
  const ipam = { get state() { return deps.state(); } };
  return http.createServer((req, res) => {
    const send = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const u = new URL(req.url ?? '/', 'http://x');
    void (async () => {
      try {
        if (req.method !== 'GET') return send(405, { error: 'method not allowed' });
        if (u.pathname === '/healthz') return send(200, { ok: true, ...status(), seq: ipam.state.seq });
        if (u.pathname === '/v1/ipam') {
          if (status().role !== 'leader') return send(503, { error: 'this controller is a standby; ask the leader' });
          return send(200, describeState(ipam.state));
        }
        if (u.pathname === '/v1/events') {
          const since = Number(u.searchParams.get('since') ?? '0');
          if (!Number.isInteger(since) || since < 0) return send(400, { error: 'since must be a whole number ≥ 0' });
          const limit = Math.min(Number(u.searchParams.get('limit') ?? '1000') || 1000, 10000);
          return send(200, { events: await log.readAll(since + 1, limit) });
        }
        send(404, { error: `no such path: ${u.pathname}` });
      } catch (e) {
        send(500, { error: (e as Error).message });
      }
    })();
  });
}
