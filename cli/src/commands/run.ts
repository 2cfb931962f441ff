import type { z } from 'zod';
import { activeSpanContext, type Tracing } from '@underlay/adapters';
import { helpFor, parseFlags, validate, type FlagSpec } from '../flags.js';

/** Runs a service until SIGINT/SIGTERM, then stops it cleanly and exits. */
/**
 * The services' log: one line per message on stderr, `<ISO time> <who>: <text>`. Kept hand-written rather than
 * pino: every message is a sentence for a person (no levels, no structured fields anywhere in the code), the
 * controller and the agent take only a `(msg: string) => void` (their `Logger` type), so they depend on no
 * logging library, and this one line is the whole implementation. When levels or fields are wanted, pino goes
 * here (and in that `Logger` type); nothing else changes.
 */
export const log = (who: string) => (m: string) => {
  // Tracing on and a span active (a plugin call, a request): the line names it, to find the trace from the log.
  const sc = activeSpanContext();
  process.stderr.write(`${new Date().toISOString()} ${who}: ${m}${sc ? ` trace_id=${sc.traceId} span_id=${sc.spanId}` : ''}\n`);
};

export function untilSignal(stop: () => Promise<void>, logger: (m: string) => void): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      logger(`${sig}: stopping`);
      const force = setTimeout(() => {
        logger('did not stop within 15 s; exiting');
        process.exit(1);
      }, 15_000);
      force.unref();
      stop()
        .catch((e) => logger(`error while stopping: ${(e as Error).message}`))
        .finally(() => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          resolve();
        });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

/** Promise rejections nobody handled since the process started (logged, never fatal). */
export let unhandledRejections = 0;
let guarded = false;

/**
 * A service must not stop because one promise somewhere was rejected with nobody waiting for it (Node's
 * default is to exit): such a rejection is a bug to log and count, not a reason to drop every host's
 * requests.
 */
export function guardProcess(logger: (m: string) => void): void {
  if (guarded) return;
  guarded = true;
  process.on('unhandledRejection', (reason) => {
    unhandledRejections++;
    const text = reason instanceof Error ? (reason.stack ?? reason.message) : String(reason);
    logger(`unhandled promise rejection #${unhandledRejections} (kept running): ${text}`);
  });
}

/** A long-running service command: flags → validated config → start → run until a signal → stop. */
export async function runService<S extends z.ZodType, T extends { start(): Promise<void>; stop(): Promise<void> }>(
  argv: string[],
  flags: FlagSpec[],
  schema: S,
  make: (cfg: z.infer<S>) => { service: T; logger: (m: string) => void },
): Promise<number> {
  const { values, help } = parseFlags(argv, flags);
  if (help) {
    process.stdout.write(`flags:\n${helpFor(flags)}\n`);
    return 0;
  }
  const { service, logger } = make(validate(schema, values, flags));
  guardProcess(logger);
  await service.start();
  await untilSignal(() => service.stop(), logger);
  return 0;
}

/** The service, whose stop also flushes and stops tracing (started by the command from the OTEL_* variables). */
export function withTracing<T extends { start(): Promise<void>; stop(): Promise<void> }>(service: T, tracing: Tracing | undefined): { start(): Promise<void>; stop(): Promise<void> } {
  if (!tracing) return service;
  return {
    start: () => service.start(),
    stop: async () => {
      try {
        await service.stop();
      } finally {
        await tracing.shutdown();
      }
    },
  };
}
