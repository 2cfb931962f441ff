import { z } from 'zod';
import { parseFlags, validate, UsageError, type FlagSpec } from '../flags.js';

export const eventsFlags: FlagSpec[] = [
  { key: 'controller', flag: 'controller', help: 'controller HTTP API (http://127.0.0.1:7410)' },
  { key: 'since', flag: 'since', help: 'print events after this sequence number (0)' },
  { key: 'json', flag: 'json', boolean: true, help: 'one JSON event per line' },
];

const EventsArgs = z.object({
  controller: z.string().url('must be a URL such as http://127.0.0.1:7410').default('http://127.0.0.1:7410'),
  since: z.coerce.number().int().nonnegative('must be a whole number ≥ 0').default(0),
  json: z.boolean().default(false),
});

export async function eventsCommand(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, eventsFlags);
  const a = validate(EventsArgs, values, eventsFlags);
  let res: Response;
  try {
    res = await fetch(`${a.controller}/v1/events?since=${a.since}&limit=10000`);
  } catch (e) {
    throw new UsageError(`cannot reach the underlay controller at ${a.controller}: ${(e as Error).cause ?? (e as Error).message}`);
  }
  const body = (await res.json()) as { events: { seq: number; time: string; type: string; actor: string; data: unknown }[] };
  for (const e of body.events) {
    process.stdout.write(a.json ? `${JSON.stringify(e)}\n` : `${String(e.seq).padStart(6)}  ${e.time}  ${e.type.padEnd(17)} ${e.actor.padEnd(14)} ${JSON.stringify(e.data)}\n`);
  }
  return 0;
}
