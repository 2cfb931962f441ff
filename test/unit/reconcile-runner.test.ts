// The shared reconcile runner and backoff (libs/adapters/src/runtime, libs/core/src/backoff.ts), on real timers.
import { Backoff, backoffDelay } from '@underlay/core';
import { ReconcileRunner, retry, RetryExhausted, sleep, type PassReason } from '@underlay/adapters';

const until = async (cond: () => boolean, what: string, ms = 2000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`waited ${ms} ms for ${what}`);
    await sleep(5);
  }
};

describe('backoff', () => {
  it('grows by the factor up to the maximum, with jitter taken off', () => {
    const p = { minMs: 100, maxMs: 1000, jitter: 0 };
    expect([0, 1, 2, 3, 4, 5].map((n) => backoffDelay(p, n))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay({ minMs: 100, maxMs: 1000, jitter: 0.5 }, 2, () => 1)).toBe(200);
    expect(backoffDelay({ minMs: 100, maxMs: 1000 }, 10_000, () => 0)).toBe(1000);
    const b = new Backoff({ minMs: 10, maxMs: 40, jitter: 0 });
    expect([b.next(), b.next(), b.next(), b.next()]).toEqual([10, 20, 40, 40]);
    expect(b.attempts).toBe(4);
    b.reset();
    expect(b.next()).toBe(10);
  });

  it('retry: retries what retryIf allows, stops at the deadline with the last cause', async () => {
    let n = 0;
    const v = await retry(async () => (++n < 3 ? Promise.reject(new Error('busy')) : 'ok'), { backoff: { minMs: 1, maxMs: 2 }, retryIf: () => true });
    expect([v, n]).toEqual(['ok', 3]);
    await expect(retry(async () => Promise.reject(new Error('final')), { backoff: { minMs: 1, maxMs: 2 } })).rejects.toThrow('final');
    const err = await retry(async () => Promise.reject(new Error('down')), { backoff: { minMs: 20, maxMs: 20, jitter: 0 }, retryIf: () => true, deadline: Date.now() + 50 }).catch((e) => e);
    expect(err).toBeInstanceOf(RetryExhausted);
    expect(err.code).toBe('unavailable');
    expect((err.cause as Error).message).toBe('down');
  });
});

describe('ReconcileRunner', () => {
  it('tells its observer of every pass, failed or not (metrics), and survives an observer that throws', async () => {
    const seen: string[] = [];
    let n = 0;
    const r = new ReconcileRunner({
      name: 'loop1',
      backoff: { minMs: 1, maxMs: 1 },
      reconcile: async () => {
        if (++n === 1) throw new Error('first fails');
      },
      observe: (name, ok) => {
        seen.push(`${name} ${ok}`);
        throw new Error('a broken observer');
      },
    });
    r.start();
    await until(() => seen.length >= 2, 'two passes');
    await r.stop();
    expect(seen.slice(0, 2)).toEqual(['loop1 false', 'loop1 true']);
  });

  it('coalesces triggers during a pass into one more pass, never overlapping', async () => {
    let active = 0;
    let maxActive = 0;
    const seen: PassReason[][] = [];
    let release!: () => void;
    let gate = new Promise<void>((r) => (release = r));
    const r = new ReconcileRunner({
      name: 't',
      reconcile: async ({ reasons }) => {
        active++;
        maxActive = Math.max(maxActive, active);
        seen.push([...reasons]);
        await gate;
        active--;
      },
    });
    r.trigger(); // before start: kept for the first pass
    r.start();
    await until(() => seen.length === 1, 'first pass');
    for (let i = 0; i < 10; i++) r.trigger();
    gate = Promise.resolve();
    release();
    await until(() => seen.length === 2 && !r.stats().running, 'second pass');
    await r.idle();
    expect(seen.length).toBe(2);
    expect(maxActive).toBe(1);
    expect(seen[0].sort()).toEqual(['start', 'trigger']);
    expect(seen[1]).toEqual(['trigger']);
    await r.stop();
  });

  it('retries a failing pass with growing delays and resets after a success', async () => {
    const times: number[] = [];
    const errors: number[] = [];
    let recovered = 0;
    const r = new ReconcileRunner({
      name: 'fails',
      backoff: { minMs: 20, maxMs: 80, jitter: 0 },
      reconcile: async () => {
        times.push(Date.now());
        if (times.length <= 3) throw new Error('not yet');
      },
      onError: (_e, info) => errors.push(info.retryInMs),
      onRecovered: (info) => (recovered = info.failures),
    });
    r.start();
    await until(() => times.length === 4, 'fourth pass');
    await r.idle();
    expect(errors).toEqual([20, 40, 80]);
    expect(times[2] - times[1]).toBeGreaterThanOrEqual(38);
    expect(times[3] - times[2]).toBeGreaterThanOrEqual(75);
    expect(recovered).toBe(3);
    expect(r.stats()).toMatchObject({ passes: 4, errors: 3, failures: 0 });
    await r.stop();
  });

  it('runs periodic resyncs and requeues on request', async () => {
    const reasons: string[] = [];
    const r = new ReconcileRunner({
      name: 'resync',
      resyncMs: 30,
      reconcile: async (p) => {
        reasons.push(...p.reasons);
        return reasons.length === 1 ? { requeueAfterMs: 5 } : undefined;
      },
    });
    r.start();
    await until(() => reasons.includes('requeue') && reasons.filter((x) => x === 'resync').length >= 2, 'requeue and two resyncs');
    await r.stop();
  });

  it('stop waits for the running pass, aborts its signal, and no pass runs after', async () => {
    let passes = 0;
    let aborted = false;
    let ended = false;
    const r = new ReconcileRunner({
      name: 'stop',
      resyncMs: 5,
      reconcile: async ({ signal }) => {
        passes++;
        await sleep(50, signal);
        aborted = signal.aborted;
        await sleep(20);
        ended = true;
      },
    });
    r.start();
    await until(() => passes === 1, 'first pass');
    await r.stop();
    expect(ended).toBe(true);
    expect(aborted).toBe(true);
    const after = passes;
    r.trigger();
    await sleep(30);
    expect(passes).toBe(after);
  });
});
