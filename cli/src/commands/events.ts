/**
 * `underlay events [--since SEQ] [--follow] [--json]`: the cluster event log through the HTTP API, page by
 * page; with --follow it keeps printing new events as they are committed, until interrupted. One line per
 * event: SEQ, TIME, TYPE, ACTOR, TRACE (the W3C trace id of the request that caused it, `-` when none; what
 * `underlay trace ID` takes) and the event's data as JSON; --json prints each event as the API sends it
 * (its `traceId` field when it has one).
 */
// The retry helpers alone (the adapters' index loads etcd, NATS and netlink).
import { retry, sleep } from '@underlay/adapters/dist/runtime/retry.js';
import { ClusterEvent, EventsPage, type BackoffPolicy } from '@underlay/core';
import { z } from 'zod';
import { ApiClient, ClientError, clientFlags, clientOptions, noArgs } from '../client.js';
import { validate, type FlagSpec } from '../flags.js';
import type { CommandDef, RunContext } from '../program.js';

/** `--json` of the event commands: NDJSON, one event a line (a stream has no one document for -o json or yaml). */
export const ndjsonFlag: FlagSpec = { key: 'json', flag: 'json', boolean: true, help: 'one JSON event per line (NDJSON)', layered: false };

export const eventsFlags: FlagSpec[] = [
  ...clientFlags,
  ndjsonFlag,
  { key: 'since', flag: 'since', value: 'SEQ', help: 'print events after this sequence number', default: 0, layered: false },
  { key: 'follow', flag: 'follow', short: 'f', boolean: true, help: 'keep printing new events as they come', layered: false },
];

const EventsArgs = z.object({
  since: z.string().regex(/^\d+$/, 'must be a whole number ≥ 0').transform(Number).default(0),
  follow: z.boolean().default(false),
});

/** A controller with all its streams taken (503) is asked again after these delays. */
const BUSY_RETRY: BackoffPolicy = { minMs: 5_000, maxMs: 30_000 };
/** Pause before opening a stream again after it ended. */
const REOPEN_MS = 1_000;

/** Width of the TRACE column: a W3C trace id. */
const TRACE_WIDTH = 32;

/** The TRACE cell: the event's trace id, `-` when it has none; whitespace folded so the columns stay parseable. */
export function traceCell(traceId: string | undefined): string {
  const t = traceId?.replace(/\s+/g, '');
  return t ? t : '-';
}

/** One event as `underlay events` and `underlay trace` print it: a line of columns, or its JSON (NDJSON). */
export function eventLine(e: ClusterEvent, asJson: boolean): string {
  if (asJson) return `${JSON.stringify(e)}\n`;
  return `${String(e.seq).padStart(6)}  ${e.time}  ${e.type.padEnd(21)} ${e.actor.padEnd(14)} ${traceCell(e.traceId).padEnd(TRACE_WIDTH)} ${JSON.stringify(e.data)}\n`;
}

async function events(p: RunContext): Promise<number> {
  noArgs(p, 'events');
  const a = validate(EventsArgs, p.values, eventsFlags);
  const json = p.values.json === true;
  const api = new ApiClient(clientOptions(p));
  if (a.follow) {
    // Until interrupted: when the stream ends or breaks (its maximum duration, a proxy, the controller
    // restarting), open it again after the last event printed; a controller that cannot be reached ends the
    // command. Once a stream was open, a controller with all its streams taken (503) is asked again later.
    let cursor = a.since;
    let opened = false;
    for (;;) {
      await retry(
        async () => {
          await api.stream(`/v1/events?since=${cursor}&follow=true`, (raw) => {
            const r = ClusterEvent.safeParse(raw);
            process.stdout.write(r.success ? eventLine(r.data as ClusterEvent, json) : `${JSON.stringify(raw)}\n`);
            if (r.success) cursor = r.data.seq;
          });
          opened = true;
        },
        { backoff: BUSY_RETRY, retryIf: (e) => opened && e instanceof ClientError && e.status === 503, keepAlive: true },
      );
      await sleep(REOPEN_MS, undefined, { keepAlive: true });
    }
  }
  let next = a.since;
  const limit = 1000;
  for (;;) {
    const { data } = await api.get(`/v1/events?since=${next}&limit=${limit}`, EventsPage);
    for (const e of data.events) process.stdout.write(eventLine(e as ClusterEvent, json));
    if (data.events.length < limit || data.next === next) break;
    next = data.next;
  }
  return 0;
}

export const eventsCommand: CommandDef = { name: 'events', summary: 'print (or --follow) the cluster event log', flags: eventsFlags, section: 'client', run: events };
