/**
 * A batch of span rows (span-batch.ts) straight to the bytes of an OTLP `ExportTraceServiceRequest` (protobuf), on
 * the export thread, for OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf.
 *
 * Hand-written because the SDK's way there costs the thread most of its time: rebuilding a ReadableSpan object per row
 * (~3.5 µs a span) and the transformer's serializer (a size-estimating pass, then a writing pass, a new array per
 * id: ~7 µs a span), ~21% of a core at 3,000 requests a second on the 2-core machine — core time the controller, etcd
 * and nats-server needed (bench:ipam's tracing ratio). This writes each row once into a buffer kept between batches.
 * It follows @opentelemetry/otlp-transformer's serializer field by field (order, what is left out when empty, span
 * flags, the int/double choice of a number attribute), so the request is byte for byte the one the SDK's exporter
 * sends for the same spans (test/unit/otlp-rows.test.ts compares them). The HTTP export itself stays the SDK's
 * (export-worker.ts: its transport, retries, headers, timeout and TLS from the same OTEL_* variables).
 */
import type { TimedEvent } from '@opentelemetry/sdk-trace-base';
import type { LinkRow, SpanBatch, SpanRow } from './span-batch.js';
import { withRoom } from './grow.js';

/** A growable protobuf writer: lengths are reserved as one byte and the content moved when they need more. */
class Writer {
  buf: Uint8Array;
  view: DataView;
  pos = 0;
  private readonly text = new TextEncoder();

  constructor(size = 1 << 16) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.buf = withRoom(this.buf, this.pos, n);
    this.view = new DataView(this.buf.buffer);
  }

  varint(value: number): void {
    this.ensure(10);
    const b = this.buf;
    if (value >= 0 && value <= 0xffffffff) {
      let v = value >>> 0;
      while (v > 0x7f) {
        b[this.pos++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      b[this.pos++] = v;
      return;
    }
    // 64-bit (negative: two's complement), as the SDK's writer does.
    let low: number;
    let high: number;
    if (value >= 0) {
      low = value >>> 0;
      high = (value / 0x100000000) >>> 0;
    } else {
      const abs = Math.abs(value);
      low = ~(abs >>> 0) >>> 0;
      high = ~((abs / 0x100000000) >>> 0) >>> 0;
      low = (low + 1) >>> 0;
      if (low === 0) high = (high + 1) >>> 0;
    }
    while (high > 0 || low > 0x7f) {
      b[this.pos++] = (low & 0x7f) | 0x80;
      low = ((low >>> 7) | (high << 25)) >>> 0;
      high >>>= 7;
    }
    b[this.pos++] = low & 0x7f;
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  /** Starts a length-delimited field's content (after its tag); returns what `end` needs. */
  start(): number {
    this.ensure(1);
    return this.pos++;
  }

  end(at: number): void {
    const len = this.pos - at - 1;
    if (len < 0x80) {
      this.buf[at] = len;
      return;
    }
    let size = 2;
    for (let v = len >>> 14; v > 0; v >>>= 7) size++;
    this.ensure(size - 1);
    this.buf.copyWithin(at + size, at + 1, this.pos);
    this.pos += size - 1;
    let v = len;
    for (let i = 0; i < size - 1; i++, v >>>= 7) this.buf[at + i] = (v & 0x7f) | 0x80;
    this.buf[at + size - 1] = v;
  }

  string(s: string): void {
    const n = s.length;
    let ascii = true;
    for (let i = 0; i < n; i++) {
      if (s.charCodeAt(i) > 127) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      this.varint(n);
      this.ensure(n);
      for (let i = 0; i < n; i++) this.buf[this.pos++] = s.charCodeAt(i);
    } else {
      this.bytes(this.text.encode(s));
    }
  }

  bytes(b: Uint8Array): void {
    this.varint(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** A hex id (trace or span id) as its bytes. */
  hex(h: string): void {
    const n = h.length >> 1;
    this.varint(n);
    this.ensure(n);
    for (let i = 0; i < h.length; i += 2) this.buf[this.pos++] = (nibble(h.charCodeAt(i)) << 4) | nibble(h.charCodeAt(i + 1));
  }

  fixed32(value: number): void {
    this.ensure(4);
    this.view.setUint32(this.pos, value >>> 0, true);
    this.pos += 4;
  }

  fixed64(low: number, high: number): void {
    this.ensure(8);
    this.view.setUint32(this.pos, low >>> 0, true);
    this.view.setUint32(this.pos + 4, high >>> 0, true);
    this.pos += 8;
  }

  double(value: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, value, true);
    this.pos += 8;
  }

  /** HrTime [seconds, nanoseconds] as fixed64 nanoseconds, without losing precision past 2^53. */
  hrTime(s: number, ns: number): void {
    const lower = (s & 0xffff) * 1e9;
    const upper = ((s / 0x10000) >>> 0) * 1e9;
    const low = (lower >>> 0) + ((((upper & 0xffff) * 0x10000) >>> 0) + ns);
    const high = Math.floor(lower / 0x100000000) + ((upper / 0x10000) >>> 0) + Math.floor(low / 0x100000000);
    this.fixed64(low >>> 0, high >>> 0);
  }
}

function nibble(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  return c - 55;
}

const MIN_INT64 = -(2 ** 63);
const MAX_INT64 = 2 ** 63;

function anyValue(w: Writer, value: unknown): void {
  const t = typeof value;
  if (t === 'string') {
    w.tag(1, 2);
    w.string(value as string);
  } else if (t === 'boolean') {
    w.tag(2, 0);
    w.varint(value ? 1 : 0);
  } else if (t === 'number') {
    const n = value as number;
    if (Number.isInteger(n) && n >= MIN_INT64 && n < MAX_INT64) {
      w.tag(3, 0);
      w.varint(n);
    } else {
      w.tag(4, 1);
      w.double(n);
    }
  } else if (value instanceof Uint8Array) {
    w.tag(7, 2);
    w.bytes(value);
  } else if (Array.isArray(value)) {
    w.tag(5, 2);
    const at = w.start();
    for (const item of value) {
      w.tag(1, 2);
      const i = w.start();
      anyValue(w, item);
      w.end(i);
    }
    w.end(at);
  } else if (t === 'object' && value !== null) {
    w.tag(6, 2);
    const at = w.start();
    objectAttributes(w, value as Record<string, unknown>, 1);
    w.end(at);
  }
}

function keyValue(w: Writer, key: string, value: unknown): void {
  w.tag(1, 2);
  w.string(key);
  w.tag(2, 2);
  const at = w.start();
  anyValue(w, value);
  w.end(at);
}

/** Attributes as `[key, value, …]` (a row's) as repeated KeyValue in `field`. */
function flatAttributes(w: Writer, flat: readonly unknown[], field: number): void {
  for (let i = 0; i < flat.length; i += 2) {
    w.tag(field, 2);
    const at = w.start();
    keyValue(w, flat[i] as string, flat[i + 1]);
    w.end(at);
  }
}

function objectAttributes(w: Writer, attrs: Record<string, unknown>, field: number): void {
  for (const k in attrs) {
    if (!Object.prototype.hasOwnProperty.call(attrs, k)) continue;
    w.tag(field, 2);
    const at = w.start();
    keyValue(w, k, attrs[k]);
    w.end(at);
  }
}

/** Span and link flags: the trace flags, "has is_remote", and is_remote. */
const spanFlags = (traceFlags: number, remote: boolean): number => (traceFlags & 0xff) | 0x100 | (remote ? 0x200 : 0);

function event(w: Writer, e: TimedEvent): void {
  const at = w.start();
  w.tag(1, 1);
  w.hrTime(e.time[0], e.time[1]);
  w.tag(2, 2);
  w.string(e.name);
  if (e.attributes) objectAttributes(w, e.attributes, 3);
  w.tag(4, 0);
  w.varint(e.droppedAttributesCount || 0);
  w.end(at);
}

function link(w: Writer, [traceId, spanId, flags, remote, state, attrs, dropped]: LinkRow): void {
  const at = w.start();
  w.tag(1, 2);
  w.hex(traceId);
  w.tag(2, 2);
  w.hex(spanId);
  if (state) {
    w.tag(3, 2);
    w.string(state);
  }
  if (attrs) flatAttributes(w, attrs, 4);
  w.tag(5, 0);
  w.varint(dropped || 0);
  w.tag(6, 5);
  w.fixed32(spanFlags(flags, remote === 1));
  w.end(at);
}

function span(w: Writer, r: SpanRow): void {
  const at = w.start();
  w.tag(1, 2);
  w.hex(r[2]);
  w.tag(2, 2);
  w.hex(r[3]);
  if (r[6]) {
    w.tag(3, 2);
    w.string(r[6]);
  }
  const parent = r[8];
  if (parent) {
    w.tag(4, 2);
    w.hex(parent);
  }
  w.tag(5, 2);
  w.string(r[0]);
  w.tag(6, 0);
  w.varint(r[1] + 1);
  w.tag(7, 1);
  w.hrTime(r[12], r[13]);
  w.tag(8, 1);
  w.hrTime(r[14], r[15]);
  flatAttributes(w, r[18], 9);
  w.tag(10, 0);
  w.varint(r[21]);
  if (r[20]) {
    for (const e of r[20]) {
      w.tag(11, 2);
      event(w, e);
    }
  }
  w.tag(12, 0);
  w.varint(r[22]);
  if (r[19]) {
    for (const l of r[19]) {
      w.tag(13, 2);
      link(w, l);
    }
  }
  w.tag(14, 0);
  w.varint(r[23]);
  w.tag(15, 2);
  const status = w.start();
  if (r[17]) {
    w.tag(2, 2);
    w.string(r[17]);
  }
  w.tag(3, 0);
  w.varint(r[16]);
  w.end(status);
  w.tag(16, 5);
  w.fixed32(spanFlags(r[4], parent !== '' && r[10] === 1));
  w.end(at);
}

/** One writer per thread: its buffer is kept between batches (the request is copied out of it). */
let shared: Writer | undefined;

/** The OTLP/protobuf ExportTraceServiceRequest of a batch: resources, then scopes, in the order they first appear. */
export function encodeSpanBatch(batch: SpanBatch): Uint8Array {
  const w = (shared ??= new Writer());
  w.pos = 0;
  // Spans by resource, then by scope, each group in first-appearance order (as the SDK groups them).
  const groups = new Map<number, Map<number, SpanRow[]>>();
  for (const r of batch.spans) {
    let scopes = groups.get(r[24]);
    if (!scopes) groups.set(r[24], (scopes = new Map()));
    let rows = scopes.get(r[25]);
    if (!rows) scopes.set(r[25], (rows = []));
    rows.push(r);
  }
  for (const [resourceIndex, scopes] of groups) {
    const resource = batch.resources[resourceIndex]!;
    w.tag(1, 2);
    const rs = w.start();
    w.tag(1, 2);
    const res = w.start();
    objectAttributes(w, resource.attributes as Record<string, unknown>, 1);
    w.tag(2, 0);
    w.varint(0);
    w.end(res);
    for (const [scopeIndex, rows] of scopes) {
      const scope = batch.scopes[scopeIndex]!;
      w.tag(2, 2);
      const ss = w.start();
      w.tag(1, 2);
      const sc = w.start();
      w.tag(1, 2);
      w.string(scope.name);
      if (scope.version) {
        w.tag(2, 2);
        w.string(scope.version);
      }
      w.end(sc);
      for (const r of rows) {
        w.tag(2, 2);
        span(w, r);
      }
      if (scope.schemaUrl) {
        w.tag(3, 2);
        w.string(scope.schemaUrl);
      }
      w.end(ss);
    }
    if (resource.schemaUrl) {
      w.tag(3, 2);
      w.string(resource.schemaUrl);
    }
    w.end(rs);
  }
  return w.buf.slice(0, w.pos);
}
