/**
 * The one way services connect to NATS: reconnect forever, and optionally authenticate with a `.creds` file
 * (decentralized auth, see ./creds.ts), use TLS (CA, client certificate and key files) and a private inbox prefix
 * (a node's user may subscribe only under `_UL_INBOX.<node token>`).
 *
 * The creds file is read once up front (a missing or unreadable file fails the connect with its path) and again
 * on every reconnect, so a renewed file is picked up without a restart.
 *
 * TLS to a server given by IP address: nats.js sends no server name for an IP, so Node would check the server's
 * certificate against "localhost". Here the certificate must name (IP SAN) one of the IP addresses in the URL list
 * instead; servers given by host name are checked against that name as usual.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import { LIMITS, UnderlayError } from '@underlay/core';
import { z } from 'zod';
import { logWarn } from '../telemetry/log.js';

export interface NatsConnectOptions {
  /** Path of a standard NATS `.creds` file (user JWT and nkey seed). */
  creds?: string;
  /**
   * TLS: files of the CA bundle that signed the server's certificate, and this client's certificate and key. TLS is
   * required when any of them is given (an object with none given means no TLS, so configs can pass theirs as is).
   */
  tls?: { ca?: string; cert?: string; key?: string };
  /** Prefix of reply inboxes (default `_INBOX`). */
  inboxPrefix?: string;
  /**
   * Keep trying until the first connection is made (every 250 ms) instead of failing when no server answers: for a
   * service that starts with the host, before NATS can be reached (the agent, whose plugin socket serves meanwhile).
   */
  waitOnFirstConnect?: boolean;
}

/** A file the connection needs could not be read: its path and why. */
export class NatsConnectFileError extends UnderlayError {
  constructor(what: string, file: string, cause: unknown) {
    super('invalid-argument', `cannot read the NATS ${what} file ${file}: ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}`, { cause });
    this.name = 'NatsConnectFileError';
  }
}

function readOrThrow(what: string, file: string): Uint8Array {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new NatsConnectFileError(what, file, e);
  }
}

/** The servers of a `--nats` value: a list, or one string with URLs separated by commas (blanks ignored). */
export function natsServers(servers: string | readonly string[]): string[] {
  return (typeof servers === 'string' ? servers.split(',') : [...servers]).map((s) => s.trim()).filter((s) => s !== '');
}

/** `--nats` of the controller and the agent: the servers of one NATS cluster, as a list or one string with commas (`nats://a:4222,nats://b:4222`). */
export const NatsServers = z
  .union([z.string(), z.array(z.string())], { error: (iss) => (iss.input === undefined ? 'is required' : 'NATS servers are URLs such as nats://127.0.0.1:4222, comma-separated') })
  .transform((v) => natsServers(v))
  .pipe(
    z
      .array(z.string().max(LIMITS.path, `each NATS server is at most ${LIMITS.path} characters`).regex(/^\S+$/, 'each NATS server is a URL such as nats://127.0.0.1:4222'))
      .min(1, 'at least one NATS server is needed')
      .max(64, 'at most 64 NATS servers'),
  );

/**
 * Connects to one of `servers` (the servers of a NATS cluster: several URLs, or one string with commas) and, when one
 * goes away, to another: the client also learns the cluster's other servers from the one it reaches.
 */
export async function connectNats(servers: string | readonly string[], name: string, opts: NatsConnectOptions = {}): Promise<NatsConnection> {
  // noAsyncTraces: nats-core otherwise builds Error objects (with stack traces) for every request.
  const o: ConnectionOptions = { servers: natsServers(servers), name, maxReconnectAttempts: -1, reconnectTimeWait: 250, noAsyncTraces: true };
  if (opts.creds) {
    const file = opts.creds;
    let last = readOrThrow('creds', file);
    o.authenticator = credsAuthenticator(() => {
      try {
        last = fs.readFileSync(file);
      } catch {
        /* keep the last good copy; the server says whether it is still valid */
      }
      return last;
    });
    // A service keeps trying with the (re-read) creds file rather than giving up after two refusals.
    o.ignoreAuthErrorAbort = true;
  }
  if (opts.tls && (opts.tls.ca || opts.tls.cert || opts.tls.key)) {
    const { ca, cert, key } = opts.tls;
    for (const [what, f] of [['CA', ca], ['certificate', cert], ['key', key]] as const) if (f) readOrThrow(what, f);
    const ips = o.servers ? [o.servers].flat().map(hostOf).filter((h) => net.isIP(h)) : [];
    const checkServerIdentity = (host: string, peer: tls.PeerCertificate): Error | undefined => {
      // `host` is the server name nats.js gave, or Node's default "localhost" when it gave none (an IP URL).
      if (host !== 'localhost' || ips.length === 0) return tls.checkServerIdentity(host, peer);
      let first: Error | undefined;
      for (const ip of ips) {
        const e = tls.checkServerIdentity(ip, peer);
        if (!e) return undefined;
        first ??= e;
      }
      return first;
    };
    // nats.js merges these options into Node's tls.connect options (checkServerIdentity passes through).
    o.tls = { ...(ca ? { caFile: ca } : {}), ...(cert ? { certFile: cert } : {}), ...(key ? { keyFile: key } : {}), checkServerIdentity } as ConnectionOptions['tls'];
  }
  if (opts.inboxPrefix) o.inboxPrefix = opts.inboxPrefix;
  if (opts.waitOnFirstConnect) o.waitOnFirstConnect = true;
  return connect(o);
}
/**
 * Logs the connection's moves between the servers of the cluster: the server lost (a warning; the client reconnects to
 * it or to another server it knows), the server reached again, a server entering lame duck mode. Ends with the connection.
 */
export function logNatsStatus(nc: NatsConnection, log: (m: string) => void): void {
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') logWarn(log, `NATS: lost the connection to ${s.server}; reconnecting (to it or another server of the cluster)`);
      else if (s.type === 'reconnect') log(`NATS: reconnected, now on ${s.server}`);
      else if (s.type === 'ldm') logWarn(log, `NATS: ${s.server} is entering lame duck mode (shutting down); moving to another server`);
    }
  })().catch(() => {});
}

/** The host of `nats://host:port`, `tls://[v6]:port` or `host:port`. */
function hostOf(server: string): string {
  const hp = server.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/^[^@]*@/, '').replace(/\/.*$/, '');
  const v6 = /^\[([^\]]+)\]/.exec(hp);
  if (v6) return v6[1]!;
  return net.isIP(hp) ? hp : hp.replace(/:\d+$/, '');
}
export type { NatsConnection };
