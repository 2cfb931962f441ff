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
