/**
 * A few calls at once over indices: how a snapshot's parts are read, by the controller from etcd and by an agent from
 * the controller (one part at a time, a cold start mostly waited on round trips). Hand-written: ten lines, where a
 * dependency (p-limit and the like) would bring an ESM-only package into this CommonJS build.
 */

/**
 * Runs `fn(0)` … `fn(count - 1)`, at most `limit` at a time, started in index order. Once a call returns `false` or
 * throws, no further call starts; it resolves (or rejects with the first error) when the calls running have ended.
 */
export async function eachAtOnce(count: number, limit: number, fn: (i: number) => Promise<boolean | void>): Promise<void> {
  let next = 0;
  let stop = false;
  const worker = async (): Promise<void> => {
    while (!stop && next < count) {
      const i = next++;
      try {
        if ((await fn(i)) === false) stop = true;
      } catch (e) {
        stop = true;
        throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(0, Math.min(limit, count)) }, worker));
}
