/**
 * One `docker run` as one trace. Docker sends no trace context to plugins, and its calls for one container are
 * separate requests: RequestAddress, then CreateEndpoint (holding the address it got), then Join (the endpoint).
 * With tracing on, the plugin server asks this module for each call's parent: CreateEndpoint continues the trace
 * of the RequestAddress that handed out its address, Join that of its CreateEndpoint. Taking a container down is
 * a trace of its own the same way: Leave, then DeleteEndpoint (same endpoint), then ReleaseAddress (its address).
 * Entries are kept for a short while and a bounded number (a call that never comes leaves nothing behind for long).
 */
import { ROOT_CONTEXT, traceContext, type Context, type SpanContext } from '@underlay/adapters';

/** How long a call waits for its follower (Docker sends them back to back), and how many are kept at most. */
const KEEP_MS = 60_000;
const MAX_ENTRIES = 4096;

const ip = (cidr: unknown): string | undefined => (typeof cidr === 'string' && cidr ? cidr.split('/')[0] : undefined);

interface Body {
  Address?: unknown;
  EndpointID?: unknown;
  Interface?: { Address?: unknown; AddressIPv6?: unknown };
}

export class PluginTraces {
  private readonly entries = new Map<string, { sc: SpanContext; at: number }>();
  /** The address of each endpoint created here (for the ReleaseAddress after its DeleteEndpoint). */
  private readonly addressOf = new Map<string, { ip: string; at: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** The parent of a plugin call: the earlier call of the same container start or stop, else a new trace. */
  parent(call: string, body: unknown): Context {
    const b = (body ?? {}) as Body;
    const ep = typeof b.EndpointID === 'string' ? b.EndpointID : undefined;
    let key: string | undefined;
    if (call === 'CreateEndpoint') key = `up:${ip(b.Interface?.Address) ?? ip(b.Interface?.AddressIPv6)}`;
    else if (call === 'Join' && ep) key = `ep:${ep}`;
    else if (call === 'DeleteEndpoint' && ep) key = `down:${ep}`;
    else if (call === 'ReleaseAddress') key = `free:${ip(b.Address)}`;
    return key ? traceContext(this.take(key)) : ROOT_CONTEXT;
  }

  /** Notes a call that succeeded, for the call that follows it. */
  done(call: string, body: unknown, out: unknown, sc: SpanContext): void {
    const b = (body ?? {}) as Body;
    const ep = typeof b.EndpointID === 'string' ? b.EndpointID : undefined;
    if (call === 'RequestAddress') {
      const a = ip((out as Body | undefined)?.Address);
      if (a) this.put(`up:${a}`, sc);
    } else if (call === 'CreateEndpoint' && ep) {
      this.put(`ep:${ep}`, sc);
      const a = ip(b.Interface?.Address) ?? ip(b.Interface?.AddressIPv6);
      if (a) this.addressOf.set(ep, { ip: a, at: this.now() });
    } else if (call === 'Leave' && ep) {
      this.put(`down:${ep}`, sc);
    } else if (call === 'DeleteEndpoint' && ep) {
      const a = this.addressOf.get(ep);
      this.addressOf.delete(ep);
      if (a) this.put(`free:${a.ip}`, sc);
    }
  }

  private take(key: string): SpanContext | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    this.entries.delete(key);
    return this.now() - e.at <= KEEP_MS ? e.sc : undefined;
  }

  private put(key: string, sc: SpanContext): void {
    const now = this.now();
    this.entries.delete(key);
    this.entries.set(key, { sc, at: now });
    // Oldest first (insertion order): drop what is too old or too many.
    for (const [k, e] of this.entries) {
      if (this.entries.size <= MAX_ENTRIES && now - e.at <= KEEP_MS) break;
      this.entries.delete(k);
    }
    for (const [k, e] of this.addressOf) {
      if (this.addressOf.size <= MAX_ENTRIES && now - e.at <= 24 * 3600_000) break;
      this.addressOf.delete(k);
    }
  }
}
