import type { z } from 'zod';
import { LogOptions, createServiceLog, logError, type ServiceLog, type Tracing } from '@underlay/adapters';
import { validate, type FlagSpec, type ResolvedFlags } from '../flags.js';
import { logFlags } from '../specs/log.js';

export { logFlags };

export type LogSettings = z.infer<typeof LogOptions>;

/** Takes the log flags out of parsed values (the service's own schema never sees them) and validates them. */
export function takeLogSettings(values: Record<string, unknown>): LogSettings {
  const picked = { logFormat: values.logFormat, logLevel: values.logLevel };
  delete values.logFormat;
  delete values.logLevel;
  return validate(LogOptions, picked, logFlags);
}

/** A service's log (`who` names it in text lines; service and instance are fields of JSON lines). */
export function serviceLog(settings: LogSettings, service: string, who: string, instance?: string): ServiceLog {
  return createServiceLog({ service, who, ...(instance !== undefined ? { instance } : {}), ...(settings.logFormat ? { format: settings.logFormat } : {}), level: settings.logLevel });
}

/** Runs a service until SIGINT/SIGTERM, then stops it cleanly and exits. */
export function untilSignal(stop: () => Promise<void>, logger: (m: string) => void): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      logger(`${sig}: stopping`);
      const force = setTimeout(() => {
        logError(logger, 'did not stop within 15 s; exiting');
        process.exit(1);
      }, 15_000);
      force.unref();
      stop()
        .catch((e) => logError(logger, `error while stopping: ${(e as Error).message}`))
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
    logError(logger, `unhandled promise rejection #${unhandledRejections} (kept running): ${text}`);
  });
}

/** A long-running service command: flags → validated config → start → run until a signal → stop. */
export async function runService<S extends z.ZodType, T extends { start(): Promise<void>; stop(): Promise<void> }>(
  p: ResolvedFlags,
  flags: FlagSpec[],
  schema: S,
  make: (cfg: z.infer<S>, log: LogSettings) => { service: T; logger: (m: string) => void },
): Promise<number> {
  const values = { ...p.values };
  const logSettings = takeLogSettings(values);
  const { service, logger } = make(validate(schema, values, flags), logSettings);
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
