/**
 * Where gobgpd's gRPC API may be: loopback or a unix socket, never a routable address. The API has no
 * authentication (anyone who reaches it can add peers and paths), and gobgpd's own default, `:50051`,
 * is every address of the host.
 */
import { UnderlayError, tryParseAddr } from '@underlay/core';

/** An API address that is not loopback or a unix socket (a configuration error). */
export class GobgpTargetError extends UnderlayError {
  constructor(target: string, why: string) {
    super(
      'invalid-argument',
      `gobgpd API ${JSON.stringify(target)}: ${why}; use 127.0.0.1:PORT, [::1]:PORT or unix:/PATH ` +
        '(start gobgpd with --api-hosts 127.0.0.1:50051 or --api-hosts unix:///run/gobgpd.sock): its gRPC API has no authentication',
    );
    this.name = 'GobgpTargetError';
  }
}

/**
 * Checks an API address and returns the gRPC target for it: `unix:PATH`, `unix://PATH` and
 * `unix:///PATH` are kept; `HOST:PORT` must name a loopback address (127.0.0.0/8, ::1, `localhost`,
 * which becomes 127.0.0.1). Throws GobgpTargetError for anything else.
 */
export function gobgpTarget(target: string): string {
  const t = target.trim();
  if (t.startsWith('unix:')) {
    const p = t.replace(/^unix:(\/\/)?/, '');
    if (p === '' || p.includes('\0')) throw new GobgpTargetError(target, 'no socket path');
    return t;
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(t) || t.startsWith('dns:') || t.startsWith('ipv4:') || t.startsWith('ipv6:')) {
    throw new GobgpTargetError(target, 'only HOST:PORT or unix:PATH is accepted');
  }
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(t);
  if (!m) throw new GobgpTargetError(target, 'not HOST:PORT');
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (!(port >= 1 && port <= 65535)) throw new GobgpTargetError(target, `port ${m[3]} is out of range`);
  if (host === 'localhost') return `127.0.0.1:${port}`;
  const addr = tryParseAddr(host);
  if (!addr) throw new GobgpTargetError(target, `${host} is not an IP address (a name could resolve to a routable address)`);
  const loopback = addr.family === 4 ? addr.value >> 24n === 127n : addr.value === 1n;
  if (!loopback) throw new GobgpTargetError(target, `${host} is not a loopback address`);
  return addr.family === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}
