/**
 * The etcd client of the controllers: TLS, user authentication, and a deadline on every call.
 *
 * Every unary call made through `EtcdCalls.run` carries a gRPC deadline and is raced with a timer of the same
 * length, so it ends, at the latest, `timeoutMs` after it started: etcd3's own retries (3 attempts) and the
 * token exchange of password authentication all share that one deadline. Failures that mean "etcd cannot be
 * used now" (deadline, connection refused, TLS handshake, open circuit breaker, authentication refused) become
 * an `UnavailableError` that names the endpoints, the deadline and the operation (a call is not tried again on
 * another member once its deadline passed, and a member that failed 3 times in a row is skipped 1 s: fault-handling.ts):
 * `etcd at http://127.0.0.1:2379: did not answer within 5000 ms (range /underlay/v1/events/…)`.
 * Streams (watches, lease keepalives) carry no deadline; the leader election bounds them itself.
 */
import type { Etcd3, IOptions } from 'etcd3';
import { etcd3 } from './lib.js';
import { UnavailableError, UnderlayError } from '@underlay/core';
import { MEMBER_SKIP_MS, MemberSkippedError, faultHandling } from './fault-handling.js';

/** Default deadline of one etcd call. */
export const DEFAULT_ETCD_TIMEOUT_MS = 5_000;
/** Bounds of `--etcd-timeout-ms`. */
export const MIN_ETCD_TIMEOUT_MS = 100;
export const MAX_ETCD_TIMEOUT_MS = 120_000;

export interface EtcdClientOptions {
  /** Client URLs (`http://…` or `https://…`). */
  endpoints: string[];
  /** Deadline of every call, in ms (default 5000). */
  timeoutMs?: number;
  /** TLS: CA bundle that signed etcd's server certificate, and this client's certificate and key (PEM). */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /** etcd user authentication. */
  auth?: { username: string; password: string };
}

/** The largest etcd answer the client accepts. */
export const ETCD_MAX_RECEIVE_BYTES = 128 * 1024 * 1024;

/** The HTTP/2 flow-control window of the client's connections and streams (bytes etcd may send before we read them). */
export const ETCD_FLOW_CONTROL_WINDOW = 8 * 1024 * 1024;

/** Builds an etcd3 client: TLS when `tls` is given or an endpoint is https://, password auth when `auth` is given. */
export function createEtcdClient(o: EtcdClientOptions): Etcd3 {
  const timeoutMs = checkTimeout(o.timeoutMs ?? DEFAULT_ETCD_TIMEOUT_MS);
  if (o.endpoints.length === 0) throw new UnderlayError('invalid-argument', 'at least one etcd endpoint is needed');
  if ((o.tls?.cert === undefined) !== (o.tls?.key === undefined)) {
    throw new UnderlayError('invalid-argument', 'an etcd client certificate needs its key, and a key its certificate');
  }
  const opts: IOptions = {
    hosts: o.endpoints,
    // Unary calls without their own deadline (etcd3's internals, the election's lease grant) get one too.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    // gRPC's default 4 MiB would refuse a range of a few large events (a network definition with many labels is
    // hundreds of KiB); reads are paged by bytes as well (EtcdEventLog.read), this is the ceiling.
    // HTTP/2's default flow-control window (64 KiB for the connection and each stream) let etcd send 64 KiB and then
    // wait for this process to read it and answer a WINDOW_UPDATE: a 1M-allocation snapshot (78 MB in 150 parts)
    // took ~1 s of such round trips at cold start, the thread idle. A larger window lets etcd send on meanwhile.
    grpcOptions: { 'grpc.max_receive_message_length': ETCD_MAX_RECEIVE_BYTES, 'grpc-node.flow_control_window': ETCD_FLOW_CONTROL_WINDOW },
    // No retry of a call whose deadline passed, and a member skipped 1 s (not 5 s) after failing: fault-handling.ts.
    faultHandling: faultHandling(),
  };
  if (o.tls && (o.tls.ca || o.tls.cert)) {
    // etcd3's type wants a root certificate; undefined means the system's roots (grpc's createSsl).
    opts.credentials = { rootCertificate: o.tls.ca as Buffer, privateKey: o.tls.key, certChain: o.tls.cert };
  }
  if (o.auth) opts.auth = { username: o.auth.username, password: o.auth.password };
  return new (etcd3().Etcd3)(opts);
}

function checkTimeout(ms: number): number {
  if (!Number.isInteger(ms) || ms < MIN_ETCD_TIMEOUT_MS || ms > MAX_ETCD_TIMEOUT_MS) {
    throw new UnderlayError('invalid-argument', `the etcd timeout must be a whole number of ms from ${MIN_ETCD_TIMEOUT_MS} to ${MAX_ETCD_TIMEOUT_MS}, got ${ms}`);
  }
  return ms;
}

/** gRPC call options with an absolute deadline (what etcd3's builders take in `.options()`). */
export interface DeadlineOptions {
  deadline: number;
}

/** Runs etcd calls with one deadline each and turns their failures into clear errors. */
export class EtcdCalls {
  readonly timeoutMs: number;
  /** How the endpoints are named in errors: `http://127.0.0.1:2379` (comma-separated when several). */
  readonly where: string;

  constructor(endpoints: readonly string[], timeoutMs = DEFAULT_ETCD_TIMEOUT_MS) {
    this.timeoutMs = checkTimeout(timeoutMs);
    this.where = endpoints.length ? endpoints.join(',') : 'etcd';
  }

  /**
   * Runs `op` with call options carrying the deadline; `what` names the operation in errors
   * (`range /underlay/v1/events/0000000000000001…`, `txn append 3 events after seq 41`).
   */
  async run<T>(what: string, op: (opts: DeadlineOptions) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.timeout(what)), this.timeoutMs);
    });
    try {
      return await Promise.race([op({ deadline }), late]);
    } catch (e) {
      throw this.translate(e, what);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The error for a call that got no answer within the deadline. */
  timeout(what: string, cause?: unknown): UnavailableError {
    return new UnavailableError(`etcd at ${this.where}: did not answer within ${this.timeoutMs} ms (${what})`, { cause });
  }

  /** Our own errors pass through; etcd and gRPC failures become UnavailableError with the endpoint and operation. */
  translate(e: unknown, what: string): Error {
    // Every member skipped (each failed its last calls): one error naming them all and the operation.
    if (e instanceof MemberSkippedError) {
      return new UnavailableError(`etcd at ${this.where}: not reachable: its last calls failed or timed out; the client tries again within ${MEMBER_SKIP_MS / 1000} s (${what})`, { cause: e });
    }
    if (e instanceof UnderlayError) return e;
    const err = e instanceof Error ? e : new Error(String(e));
    const lib = etcd3();
    if (err instanceof lib.GRPCDeadlineExceededError) return this.timeout(what, err);
    if (err instanceof lib.EtcdAuthenticationFailedError || err instanceof lib.GRPCUnauthenticatedError) {
      return new UnavailableError(`etcd at ${this.where}: authentication refused (${oneLine(err.message)}); check --etcd-user and --etcd-password-file (${what})`, { cause: err });
    }
    if (err instanceof lib.EtcdPermissionDeniedError) {
      return new UnavailableError(`etcd at ${this.where}: permission denied (${oneLine(err.message)}); check --etcd-user and that the user may read and write /underlay/ (${what})`, { cause: err });
    }
    if (/No connection established|failed to connect|ECONNREFUSED|handshake/i.test(err.message)) {
      return new UnavailableError(
        `etcd at ${this.where}: cannot connect (${oneLine(err.message)}); check the endpoint and, for https, --etcd-ca, --etcd-cert and --etcd-key (${what})`,
        { cause: err },
      );
    }
    if (/circuit breaker is open|BrokenCircuit/i.test(`${err.name} ${err.message}`)) {
      return new UnavailableError(`etcd at ${this.where}: not reachable: its last calls failed or timed out; the client tries again within ${MEMBER_SKIP_MS / 1000} s (${what})`, { cause: err });
    }
    if (err instanceof lib.ClientClosedError) {
      return new UnavailableError(`etcd client for ${this.where} is closed (${what})`, { cause: err });
    }
    return new UnavailableError(`etcd at ${this.where}: ${oneLine(err.message) || err.name} (${what})`, { cause: err });
  }
}

function oneLine(s: string): string {
  // grpc-js ends some texts with an empty "Resolution note:".
  return s.replace(/\s+/g, ' ').replace(/\s*Resolution note:\s*$/, '').trim().slice(0, 300);
}
