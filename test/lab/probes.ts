// Network probes for readiness checks: a free TCP port, an HTTP GET over TCP or
// a unix socket, and "does this TCP port accept". Each is one bounded attempt;
// waitFor (wait.ts) repeats them until a deadline.
import * as http from 'node:http';
import * as net from 'node:net';

/** A TCP port that was free a moment ago on `host` (bind port 0, read it, close). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ port: 0, host, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error(`could not get a free port on ${host}`))));
    });
  });
}

export interface HttpResponse {
  status: number;
  body: string;
}

/** GET over TCP (url) or a unix socket ({socketPath, path}); rejects on network errors or timeout. */
export function httpGet(
  target: string | { socketPath: string; path: string },
  timeoutMs = 2_000,
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const req =
      typeof target === 'string'
        ? http.get(target, { timeout: timeoutMs, agent: false })
        : http.get({ socketPath: target.socketPath, path: target.path, timeout: timeoutMs, agent: false });
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.once('error', reject);
    });
    req.once('timeout', () => req.destroy(new Error(`HTTP GET timed out after ${timeoutMs} ms`)));
    req.once('error', reject);
  });
}

/** Resolves true when a TCP connection to host:port succeeds within timeoutMs. */
export function tcpConnects(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}
