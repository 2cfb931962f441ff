/**
 * The agent's HTTP listener (`--listen`, default 127.0.0.1:7411; `''` or `off` turns it off): `GET /metrics`,
 * `/healthz` and `/readyz`, without a token (libs/adapters/src/telemetry/metrics.ts serves them). Nothing else
 * is served on it; it answers on loopback by default.
 */
import * as http from 'node:http';
import { serveTelemetry, type TelemetryEndpoints } from '@underlay/adapters';

/** `HOST:PORT`, `[v6]:PORT`; undefined for `''` or `off`. */
export function parseListen(listen: string): { host: string; port: number } | undefined {
  const s = listen.trim();
  if (s === '' || s.toLowerCase() === 'off') return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`--listen ${JSON.stringify(listen)}: expected HOST:PORT (for example 127.0.0.1:7411), or '' or off`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export interface TelemetryServer {
  address: { host: string; port: number };
  close(): Promise<void>;
}

/** Serves the three endpoints on `listen`; resolves once bound. */
export async function startTelemetryServer(listen: { host: string; port: number }, endpoints: TelemetryEndpoints): Promise<TelemetryServer> {
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000, maxHeaderSize: 16 * 1024 }, (req, res) => {
    void serveTelemetry(req, res, endpoints);
  });
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address();
  const address = a && typeof a === 'object' ? { host: a.address, port: a.port } : listen;
  return {
    address,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}
