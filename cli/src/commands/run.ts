import type { z } from 'zod';
import { parseFlags, validate, type FlagSpec } from '../flags.js';

/** Runs a service until SIGINT/SIGTERM, then stops it cleanly and exits. */
export const log = (who: string) => (m: string) => process.stderr.write(`${new Date().toISOString()} ${who}: ${m}\n`);

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

/** A long-running service command: flags → validated config → start → run until a signal → stop. */
export async function runService<S extends z.ZodType, T extends { start(): Promise<void>; stop(): Promise<void> }>(
  argv: string[],
  flags: FlagSpec[],
  schema: S,
  make: (cfg: z.infer<S>) => { service: T; logger: (m: string) => void },
): Promise<number> {
  const { values } = parseFlags(argv, flags);
  const { service, logger } = make(validate(schema, values, flags));
  await service.start();
  await untilSignal(() => service.stop(), logger);
  return 0;
}
