/**
 * `underlay trace TRACE_ID [--since SEQ] [--json]`: the events one trace caused, from the event log, in seq order
 * and printed as `underlay events` prints them: for users without a tracing backend, the cluster-side story of one
 * `docker run` (the trace id is in `underlay events`' TRACE column, in the agents' logs, in a span's trace id).
 *
 * The controller filters the log (`GET /v1/events?trace=ID`, reading it in bounded steps; `next` is the last event it
 * read, so the CLI asks again from there until `next` stops moving). The CLI keeps only that trace's events itself too,
 * so a controller that does not know the parameter yet costs time, never a wrong answer.
 *
 * Exit codes: 0 when the log was read, whether or not it holds events of that trace (no events: nothing on stdout, so
 * `--json` stays empty NDJSON, and `no events for trace ID` on stderr, as `kubectl get` says "No resources found": an
 * empty answer is not a failure, and exit 1 stays "could not talk to the controller"); 2 for a trace id that is not
 * one (32 lowercase hex digits, not all zeros), refused before the controller is asked; 1 when the controller cannot be
 * reached or refuses.
 */
import { ClusterEvent, EventsPage, TRACE_ID_RULE, isTraceId } from '@underlay/core';
import { z } from 'zod';
import { ApiClient, clientFlags, clientOptions } from '../client.js';
import { UsageError, validate, type FlagSpec } from '../flags.js';
import type { CommandDef, RunContext } from '../program.js';
import { eventLine, ndjsonFlag } from './events.js';

export const traceFlags: FlagSpec[] = [
  ...clientFlags,
  ndjsonFlag,
  { key: 'since', flag: 'since', value: 'SEQ', help: 'only events after this sequence number', default: 0, layered: false },
];
const traceUsage = 'underlay trace TRACE_ID [--since SEQ]';

const TraceArgs = z.object({
  since: z.string().regex(/^\d+$/, 'must be a whole number ≥ 0').transform(Number).default(0),
});

/** Matches asked for per request. */
const PAGE = 1000;

/** The trace id argument, or a UsageError saying what a trace id is. */
export function parseTraceId(rest: string[]): string {
  if (rest.length !== 1) throw new UsageError(`trace takes one trace id (got ${rest.length ? rest.join(' ') : 'none'}); usage: ${traceUsage}`);
  const id = rest[0]!;
  if (!isTraceId(id)) throw new UsageError(`TRACE_ID ${TRACE_ID_RULE} (got ${JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id)})`);
  return id;
}

async function trace(p: RunContext): Promise<number> {
  const id = parseTraceId(p.rest);
  const a = validate(TraceArgs, p.values, traceFlags);
  const json = p.values.json === true;
  const api = new ApiClient(clientOptions(p));
  let since = a.since;
  let found = 0;
  // Ends: each answer's `next` is past `since` (the controller read on) or equal to it (the end of the log).
  for (;;) {
    const { data } = await api.get(`/v1/events?trace=${id}&since=${since}&limit=${PAGE}`, EventsPage);
    for (const e of data.events) {
      if (e.traceId !== id) continue;
      process.stdout.write(eventLine(e as ClusterEvent, json));
      found++;
    }
    if (data.next <= since) break;
    since = data.next;
  }
  if (found === 0) process.stderr.write(`underlay trace: no events for trace ${id}${a.since ? ` after seq ${a.since}` : ''}\n`);
  return 0;
}

export const traceCommand: CommandDef = {
  name: 'trace',
  summary: 'print the events of one trace (a TRACE id of events) from the log',
  args: '[TRACE_ID]',
  flags: traceFlags,
  section: 'client',
  run: trace,
};
