/**
 * Finding one trace's events: the controller's bounded scan of the log (`GET /v1/events?trace=ID`, with a fake log
 * paged like the etcd one), the trace id's rule (API and CLI), and how `underlay events` / `underlay trace` print a
 * line with its TRACE column.
 */
import { EventsTrimmedError } from '@underlay/adapters';
import { EventsQuery, TRACE_ID_RULE, isTraceId, type ClusterEvent } from '@underlay/core';
import { traceEvents } from '../../services/controller/src/api/trace-events';
import { eventLine, traceCell } from '../../cli/src/commands/events';
import { parseTraceId } from '../../cli/src/commands/trace';
import { UsageError } from '../../cli/src/flags';

const A = 'a'.repeat(32);
const B = '0123456789abcdef0123456789abcdef';

function ev(seq: number, traceId?: string): ClusterEvent {
  return { seq, id: `id-${seq}`, time: '2026-01-01T00:00:00.000Z', actor: 'node:h1', ...(traceId ? { traceId } : {}), type: 'NodeRegistered', data: { node: 'h1' } } as ClusterEvent;
}

/** A log of `events` (seqs from `first`), read in pages of `page`; `reads` counts events handed out. */
function fakeLog(events: ClusterEvent[], o: { page?: number; firstKept?: number } = {}) {
  const page = o.page ?? 3;
  const stats = { reads: 0, starts: [] as number[] };
  return {
    stats,
    async *readSized(from = 1) {
      stats.starts.push(from);
      if (o.firstKept && from < o.firstKept) throw new EventsTrimmedError(o.firstKept);
      const rest = events.filter((e) => e.seq >= from);
      for (let i = 0; i < rest.length; i += page) {
        const chunk = rest.slice(i, i + page);
        stats.reads += chunk.length;
        yield { events: chunk, sizes: chunk.map((e) => JSON.stringify(e).length) };
      }
    },
  };
}

const log10 = () => Array.from({ length: 10 }, (_, i) => ev(i + 1, [2, 5, 6, 9].includes(i + 1) ? A : i % 2 ? B : undefined));

describe('traceEvents (GET /v1/events?trace=ID)', () => {
  it('keeps only the trace\'s events, in seq order, and reads to the end of the log', async () => {
    const log = fakeLog(log10());
    const r = await traceEvents(log, A, 0, { limit: 1000, maxBytes: 1 << 20 });
    expect(r.events.map((e) => e.seq)).toEqual([2, 5, 6, 9]);
    expect(r.next).toBe(10);
    expect(log.stats.reads).toBe(10);
    // From `next`: nothing more, and `next` stays (the client stops there).
    expect(await traceEvents(log, A, r.next, { limit: 1000, maxBytes: 1 << 20 })).toEqual({ events: [], next: 10 });
    expect(await traceEvents(log, 'f'.repeat(32), 0, { limit: 1000, maxBytes: 1 << 20 })).toEqual({ events: [], next: 10 });
  });

  it('stops at `limit` matches, `next` being the last match (the next request starts after it)', async () => {
    const log = fakeLog(log10());
    const r = await traceEvents(log, A, 0, { limit: 2, maxBytes: 1 << 20 });
    expect(r).toEqual({ events: [ev(2, A), ev(5, A)], next: 5 });
    const r2 = await traceEvents(log, A, r.next, { limit: 2, maxBytes: 1 << 20 });
    expect(r2.events.map((e) => e.seq)).toEqual([6, 9]);
  });

  it('stops after maxBytes of matches (at least one) and after maxScan events read', async () => {
    const one = await traceEvents(fakeLog(log10()), A, 0, { limit: 1000, maxBytes: 1 });
    expect(one.events.map((e) => e.seq)).toEqual([2]);
    // Read on to just before the match that did not fit.
    expect(one.next).toBe(4);
    const log = fakeLog(log10());
    const scan = await traceEvents(log, A, 0, { limit: 1000, maxBytes: 1 << 20, maxScan: 4 });
    expect(scan).toEqual({ events: [ev(2, A)], next: 4 });
    // Bounded memory: the scan stopped within the page holding the 4th event.
    expect(log.stats.reads).toBe(6);
    const more = await traceEvents(log, A, scan.next, { limit: 1000, maxBytes: 1 << 20, maxScan: 4 });
    expect(more).toEqual({ events: [ev(5, A), ev(6, A)], next: 8 });
  });

  it('starts at the first kept event when the start was trimmed', async () => {
    const log = fakeLog(log10().filter((e) => e.seq >= 6), { firstKept: 6 });
    const r = await traceEvents(log, A, 0, { limit: 1000, maxBytes: 1 << 20 });
    expect(r).toEqual({ events: [ev(6, A), ev(9, A)], next: 10 });
    expect(log.stats.starts).toEqual([1, 6]);
  });
});

describe('trace ids', () => {
  it('are 32 lowercase hex digits, not all zeros', () => {
    expect(isTraceId(A)).toBe(true);
    expect(isTraceId(B)).toBe(true);
    for (const bad of ['0'.repeat(32), B.toUpperCase(), B.slice(1), `${B}0`, `00-${B}-0123456789abcdef-01`, '', `${B.slice(0, 31)}g`]) expect(isTraceId(bad)).toBe(false);
  });

  it('are checked by the API query with the rule as message', () => {
    expect(EventsQuery.parse({ trace: B })).toMatchObject({ trace: B, since: 0, limit: 1000, follow: false });
    expect(EventsQuery.parse({}).trace).toBeUndefined();
    for (const bad of ['0'.repeat(32), 'xyz', B.toUpperCase()]) {
      const r = EventsQuery.safeParse({ trace: bad });
      expect(r.success).toBe(false);
      expect(r.error!.issues[0]).toMatchObject({ path: ['trace'], message: TRACE_ID_RULE });
    }
  });

  it('are the one argument of underlay trace (a usage error otherwise)', () => {
    expect(parseTraceId([B])).toBe(B);
    expect(() => parseTraceId([])).toThrow(new UsageError('trace takes one trace id (got none); usage: underlay trace TRACE_ID [--since SEQ]'));
    expect(() => parseTraceId([B, A])).toThrow(/trace takes one trace id \(got 0123/);
    expect(() => parseTraceId(['nope'])).toThrow(new UsageError(`TRACE_ID ${TRACE_ID_RULE} (got "nope")`));
    expect(() => parseTraceId(['x'.repeat(200)])).toThrow(/\(got "x{80}…"\)$/);
  });
});

describe('event lines', () => {
  it('have a TRACE column: the trace id, or - when none', () => {
    expect(traceCell(B)).toBe(B);
    expect(traceCell(undefined)).toBe('-');
    expect(traceCell('')).toBe('-');
    expect(traceCell('a b')).toBe('ab');
    const withTrace = eventLine(ev(7, B), false);
    const without = eventLine(ev(8), false);
    expect(withTrace).toBe(`     7  2026-01-01T00:00:00.000Z  NodeRegistered        node:h1        ${B} {"node":"h1"}\n`);
    expect(without).toBe(`     8  2026-01-01T00:00:00.000Z  NodeRegistered        node:h1        -${' '.repeat(31)} {"node":"h1"}\n`);
    // The data starts at the same column with or without a trace.
    expect(withTrace.indexOf('{')).toBe(without.indexOf('{'));
  });

  it('with --json are the event as the API sent it, traceId included', () => {
    expect(JSON.parse(eventLine(ev(7, B), true))).toEqual(ev(7, B));
    expect(JSON.parse(eventLine(ev(8), true))).not.toHaveProperty('traceId');
  });
});
