/**
 * Finished spans written into one ArrayBuffer as they end, to hand a batch to the export thread (export-thread.ts)
 * by transfer: no copy, no structured clone, and no span kept alive on the thread that serves requests.
 *
 * Hand-written because nothing in the SDK does this, and each step before it cost that thread its time (bench:ipam's
 * tracing ratio, the controller's thread at ~3,000 requests a second on the 2-core machine, profiled 2026-12-07): a
 * span queued as an object (the SDK's span, or a row of it) until its batch left lived long enough to be copied by
 * the garbage collector (31 µs a request), and the structured clone of a batch to the thread another 16 µs a request
 * (~5 µs a span). Written here, a span costs a pass over its fields (strings are short and mostly ASCII: a loop
 * of charCodeAt, no native call) and the SDK's span object dies young.
 *
 * The format is private to this module and the thread: per span, the fields of a SpanRow (span-batch.ts) in order,
 * little-endian; strings as a varint byte length and UTF-8; times as float64; attribute values tagged (string,
 * number as float64, booleans, null/undefined, arrays). Attribute keys are tokens: the first time in a batch as a 0
 * and the string, later as the varint of its place in the batch's table plus one (keys are the same dozen constants,
 * whose hash V8 keeps: a lookup instead of a copy). Names and values are written whole: they are mostly made per
 * request, and hashing a new string to look it up cost more than copying it (measured 2026-12-08). A parent in the
 * span's own trace (nearly every one) leaves its trace id out. The thread reads it back into rows (readSpanWire) and
 * encodes those (otlp-rows.ts, or fromSpanBatch for the SDK's other exporters): the request is the one the SDK's
 * exporter sends for the same spans (test/unit/span-batch.test.ts).
 */
import type { Attributes, SpanContext } from '@opentelemetry/api';
import type { ReadableSpan, TimedEvent } from '@opentelemetry/sdk-trace-base';
import type { LinkRow, SpanBatch, SpanRow } from './span-batch.js';
import { withRoom } from './grow.js';

/** One batch as it crosses to the thread: the buffer is transferred, the tables (a few entries) cloned. */
export interface SpanWire {
  buffer: ArrayBuffer;
  /** Bytes of `buffer` in use. */
  length: number;
  spans: number;
  resources: SpanBatch['resources'];
  scopes: SpanBatch['scopes'];
}

const enum V {
  Undefined = 0,
  Null = 1,
  String = 2,
  Number = 3,
  True = 4,
  False = 5,
  Array = 6,
}

const remoteFlag = (c: SpanContext): number => (c.isRemote === undefined ? -1 : c.isRemote ? 1 : 0);

/** Strings a batch's table holds at most (past it, strings are written whole): a bound on the map, not a limit. */
const MAX_TOKENS = 4096;

/** The parent field's first byte. */
const enum Parent {
  None = 0,
  /** Its trace id follows. */
  OtherTrace = 1,
  /** In the span's own trace: no trace id follows. */
  SameTrace = 2,
}

/** Writes spans into a growable buffer; `take` hands the batch over and starts the next one. */
export class SpanWriter {
  private buf: Uint8Array;
  private view: DataView;
  private pos = 0;
  private count = 0;
  private resources: ReadableSpan['resource'][] = [];
  private scopes: SpanWire['scopes'] = [];
  private resourceIndex = new Map<unknown, number>();
  private scopeIndex = new Map<unknown, number>();
  private tokens = new Map<string, number>();
  private readonly text = new TextEncoder();
  /** Buffers the thread has sent back, for the next batches (a new one is zeroed memory the writes then fault in). */
  private readonly spare: ArrayBuffer[] = [];

  private size: number;

  constructor(private readonly initial = 1 << 16) {
    this.size = initial;
    this.buf = new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
  }

  /** Spans written since the last take. */
  get spans(): number {
    return this.count;
  }

  write(s: ReadableSpan): void {
    const c = s.spanContext();
    const p = s.parentSpanContext;
    this.string(s.name);
    this.byte(s.kind);
    this.string(c.traceId);
    this.string(c.spanId);
    this.byte(c.traceFlags);
    this.byte(remoteFlag(c) + 1);
    this.string(c.traceState?.serialize() ?? '');
    if (p) {
      if (p.traceId === c.traceId) this.byte(Parent.SameTrace);
      else {
        this.byte(Parent.OtherTrace);
        this.string(p.traceId);
      }
      this.string(p.spanId);
      this.byte(p.traceFlags);
      this.byte(remoteFlag(p) + 1);
      this.string(p.traceState?.serialize() ?? '');
    } else {
      this.byte(Parent.None);
    }
    this.double(s.startTime[0]);
    this.double(s.startTime[1]);
    this.double(s.endTime[0]);
    this.double(s.endTime[1]);
    this.byte(s.status.code);
    const message = s.status.message;
    if (message === undefined) this.byte(0);
    else {
      this.byte(1);
      this.string(message);
    }
    this.attributes(s.attributes);
    this.varint(s.links.length);
    for (const l of s.links) {
      const lc = l.context;
      this.string(lc.traceId);
      this.string(lc.spanId);
      this.byte(lc.traceFlags);
      this.byte(remoteFlag(lc) + 1);
      this.string(lc.traceState?.serialize() ?? '');
      if (l.attributes) {
        this.byte(1);
        this.attributes(l.attributes);
      } else this.byte(0);
      this.varint(l.droppedAttributesCount ?? 0);
    }
    this.varint(s.events.length);
    for (const e of s.events) {
      this.string(e.name);
      this.double(e.time[0]);
      this.double(e.time[1]);
      this.byte((e.attributes ? 1 : 0) | (e.droppedAttributesCount !== undefined ? 2 : 0));
      if (e.attributes) this.attributes(e.attributes);
      if (e.droppedAttributesCount !== undefined) this.varint(e.droppedAttributesCount);
    }
    this.varint(s.droppedAttributesCount);
    this.varint(s.droppedEventsCount);
    this.varint(s.droppedLinksCount);
    this.varint(this.resourceOf(s));
    this.varint(this.scopeOf(s));
    this.count++;
  }

  /**
   * The batch written so far (its buffer transferable) and its spans' resources, and a new empty one started. The
   * resources are objects still: one may be waiting for attributes a detector reads asynchronously (plainResources).
   */
  take(): { wire: Omit<SpanWire, 'resources'>; resources: ReadableSpan['resource'][] } {
    const taken = { wire: { buffer: this.buf.buffer as ArrayBuffer, length: this.pos, spans: this.count, scopes: this.scopes }, resources: this.resources };
    // The next batch starts at about the size this one needed (not the largest ever: one huge span would keep every
    // later buffer huge).
    this.size = Math.max(this.initial, 2 ** Math.ceil(Math.log2(this.pos + 1)));
    let next = this.spare.pop();
    while (next && !this.fits(next)) next = this.spare.pop();
    this.buf = new Uint8Array(next ?? new ArrayBuffer(this.size));
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
    this.count = 0;
    this.resources = [];
    this.scopes = [];
    this.resourceIndex = new Map();
    this.scopeIndex = new Map();
    this.tokens = new Map();
    return taken;
  }

  /** A batch's buffer back from the thread, to write a later batch into (a few are kept). */
  recycle(buffer: ArrayBuffer): void {
    if (this.fits(buffer) && this.spare.length < 4) this.spare.push(buffer);
  }

  /** A buffer to write the next batch into: room for it, and not far more than it needs. */
  private fits(buffer: ArrayBuffer): boolean {
    return buffer.byteLength >= this.size && buffer.byteLength <= 4 * this.size;
  }

  private resourceOf(s: ReadableSpan): number {
    let i = this.resourceIndex.get(s.resource);
    if (i === undefined) {
      i = this.resources.push(s.resource) - 1;
      this.resourceIndex.set(s.resource, i);
    }
    return i;
  }

  private scopeOf(s: ReadableSpan): number {
    let i = this.scopeIndex.get(s.instrumentationScope);
    if (i === undefined) {
      const { name, version, schemaUrl } = s.instrumentationScope;
      i = this.scopes.push({ name, ...(version ? { version } : {}), ...(schemaUrl ? { schemaUrl } : {}) }) - 1;
      this.scopeIndex.set(s.instrumentationScope, i);
    }
    return i;
  }

  private attributes(a: Attributes): void {
    let n = 0;
    for (const _ in a) n++;
    this.varint(n);
    for (const k in a) {
      this.token(k);
      this.value(a[k]);
    }
  }

  private value(v: unknown): void {
    switch (typeof v) {
      case 'string':
        this.byte(V.String);
        this.string(v);
        return;
      case 'number':
        this.byte(V.Number);
        this.double(v);
        return;
      case 'boolean':
        this.byte(v ? V.True : V.False);
        return;
      case 'undefined':
        this.byte(V.Undefined);
        return;
    }
    if (Array.isArray(v)) {
      this.byte(V.Array);
      this.varint(v.length);
      for (const item of v) this.value(item);
      return;
    }
    // null, and what the API's attribute types do not allow (the SDK sanitizes those away before a span holds them).
    this.byte(V.Null);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.buf = withRoom(this.buf, this.pos, n);
    this.view = new DataView(this.buf.buffer);
  }

  private byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  /** A count (a whole number from 0 to 2^53); anything else is written as 0. */
  private varint(value: number): void {
    this.ensure(8);
    let v = Number.isSafeInteger(value) && value > 0 ? value : 0;
    while (v > 0x7f) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  private double(x: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, x, true);
    this.pos += 8;
  }

  /** A string that may repeat in the batch (see the header): its place in the table, or 0 and the string. */
  private token(s: string): void {
    const i = this.tokens.get(s);
    if (i !== undefined) {
      this.varint(i + 1);
      return;
    }
    this.byte(0);
    this.string(s);
    if (this.tokens.size < MAX_TOKENS) this.tokens.set(s, this.tokens.size);
  }

  /** UTF-8 with its byte length first; ASCII (ids, names, most attributes) without a native call. */
  private string(s: string): void {
    const n = s.length;
    const start = this.pos;
    this.varint(n);
    this.ensure(n);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) {
      const ch = s.charCodeAt(i);
      if (ch > 0x7f) {
        this.pos = start;
        this.utf8(s);
        return;
      }
      b[p++] = ch;
    }
    this.pos = p;
  }

  private utf8(s: string): void {
    const bytes = this.text.encode(s);
    this.varint(bytes.length);
    this.ensure(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }
}

/** The resources' attributes as plain data, once no detector is still reading any (as the SDK's BatchSpanProcessor waits). */
export async function plainResources(resources: ReadableSpan['resource'][]): Promise<SpanWire['resources']> {
  await Promise.all(resources.map((r) => (r.asyncAttributesPending && r.waitForAsyncAttributes ? r.waitForAsyncAttributes() : undefined)));
  return resources.map((r) => ({ attributes: { ...r.attributes }, ...(r.schemaUrl ? { schemaUrl: r.schemaUrl } : {}) }));
}

/** Reads a SpanWire back into rows (on the export thread). */
export function readSpanWire(wire: SpanWire): SpanBatch {
  const r = new Reader(new Uint8Array(wire.buffer, 0, wire.length));
  const spans: SpanRow[] = [];
  for (let i = 0; i < wire.spans; i++) spans.push(r.span());
  if (r.pos !== wire.length) throw new Error(`span wire: ${wire.length - r.pos} bytes left after ${wire.spans} spans`);
  return { resources: wire.resources, scopes: wire.scopes, spans };
}

class Reader {
  pos = 0;
  private readonly view: DataView;
  private readonly text = new TextDecoder();
  /** The batch's strings, in the order the writer first wrote them (SpanWriter.token). */
  private readonly tokens: string[] = [];
  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  span(): SpanRow {
    const name = this.string();
    const kind = this.byte();
    const traceId = this.string();
    const spanId = this.string();
    const flags = this.byte();
    const remote = this.byte() - 1;
    const state = this.string();
    let parent: [string, string, number, number, string] = ['', '', 0, -1, ''];
    const p = this.byte();
    if (p !== Parent.None) parent = [p === Parent.SameTrace ? traceId : this.string(), this.string(), this.byte(), this.byte() - 1, this.string()];
    const s0 = this.double();
    const s1 = this.double();
    const e0 = this.double();
    const e1 = this.double();
    const code = this.byte();
    const message = this.byte() ? this.string() : undefined;
    const attributes = this.flatAttributes();
    const nLinks = this.varint();
    const links: LinkRow[] = [];
    for (let i = 0; i < nLinks; i++) {
      links.push([this.string(), this.string(), this.byte(), this.byte() - 1, this.string(), this.byte() ? this.flatAttributes() : 0, this.varint()]);
    }
    const nEvents = this.varint();
    const events: TimedEvent[] = [];
    for (let i = 0; i < nEvents; i++) {
      const e: TimedEvent = { name: this.string(), time: [this.double(), this.double()] };
      const has = this.byte();
      if (has & 1) e.attributes = this.objectAttributes();
      if (has & 2) e.droppedAttributesCount = this.varint();
      events.push(e);
    }
    const dA = this.varint();
    const dE = this.varint();
    const dL = this.varint();
    const resource = this.varint();
    const scope = this.varint();
    return [name, kind, traceId, spanId, flags, remote, state, ...parent, s0, s1, e0, e1, code, message, attributes, links.length ? links : 0, events.length ? events : 0, dA, dE, dL, resource, scope];
  }

  private flatAttributes(): unknown[] {
    const n = this.varint();
    const out: unknown[] = [];
    for (let i = 0; i < n; i++) out.push(this.token(), this.value());
    return out;
  }

  private objectAttributes(): Attributes {
    const n = this.varint();
    const out: Attributes = {};
    for (let i = 0; i < n; i++) {
      const k = this.token();
      out[k] = this.value() as Attributes[string];
    }
    return out;
  }

  private value(): unknown {
    const t = this.byte();
    switch (t) {
      case V.String:
        return this.string();
      case V.Number:
        return this.double();
      case V.True:
        return true;
      case V.False:
        return false;
      case V.Undefined:
        return undefined;
      case V.Null:
        return null;
      case V.Array: {
        const n = this.varint();
        const out: unknown[] = [];
        for (let i = 0; i < n; i++) out.push(this.value());
        return out;
      }
      default:
        throw new Error(`span wire: unknown value tag ${t} at ${this.pos - 1}`);
    }
  }

  private byte(): number {
    if (this.pos >= this.buf.length) throw new Error('span wire: truncated');
    return this.buf[this.pos++]!;
  }

  private varint(): number {
    let v = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
      shift += 7;
    }
  }

  private double(): number {
    if (this.pos + 8 > this.buf.length) throw new Error('span wire: truncated');
    const x = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return x;
  }

  private token(): string {
    const i = this.varint();
    if (i === 0) {
      const s = this.string();
      if (this.tokens.length < MAX_TOKENS) this.tokens.push(s);
      return s;
    }
    const s = this.tokens[i - 1];
    if (s === undefined) throw new Error(`span wire: no string ${i - 1} in the batch's table at ${this.pos}`);
    return s;
  }

  private string(): string {
    const n = this.varint();
    if (this.pos + n > this.buf.length) throw new Error('span wire: truncated');
    const s = this.text.decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
}
