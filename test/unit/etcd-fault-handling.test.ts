/**
 * The etcd client's fault handling (libs/adapters/src/etcd/fault-handling.ts), on etcd3's own error classes: a call
 * is tried again on another member only while the failure is worth it (never once its deadline passed), and a member
 * is skipped for a second after three failures in a row, then tried by one call. Run against a real etcd cluster that
 * loses its raft leader in test/integration/clustered.test.ts.
 */
import { EtcdLeaseInvalidError, GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
import { CallTries, MemberBreaker, MemberSkippedError, faultHandling, worthAnotherTry } from '@underlay/adapters';

const unavailable = () => new GRPCUnavailableError('14 UNAVAILABLE: No connection established');
const late = () => new GRPCDeadlineExceededError('4 DEADLINE_EXCEEDED: Deadline exceeded');

describe('tries of one etcd call', () => {
  it('tries again, up to 3 times, while a member cannot be reached', async () => {
    let n = 0;
    await expect(new CallTries().execute(() => (++n < 3 ? Promise.reject(unavailable()) : Promise.resolve('ok')))).resolves.toBe('ok');
    expect(n).toBe(3);
    n = 0;
    await expect(new CallTries().execute(() => (n++, Promise.reject(unavailable())))).rejects.toBeInstanceOf(GRPCUnavailableError);
    expect(n).toBe(3);
  });

  it('does not try again once the deadline passed, nor after etcd refused (an answer)', async () => {
    for (const err of [late(), new EtcdLeaseInvalidError('lease not found')]) {
      let n = 0;
      await expect(new CallTries().execute(() => (n++, Promise.reject(err)))).rejects.toBe(err);
      expect(n).toBe(1);
    }
    expect([unavailable(), late(), new Error('x'), 'text'].map(worthAnotherTry)).toEqual([true, false, false, false]);
  });
});

describe('a member\'s breaker', () => {
  let t = 0;
  const breaker = () => new MemberBreaker('127.0.0.1:2379', 3, 1_000, () => t);
  const fail = (b: MemberBreaker, e: Error = unavailable()) => b.execute(() => Promise.reject(e)).catch((x: unknown) => x);
  const ok = (b: MemberBreaker) => b.execute(() => 'ok');
  beforeEach(() => (t = 0));

  it('skips the member for a second after 3 failures in a row, naming it; then one call tries it and closes it', async () => {
    const b = breaker();
    for (let i = 0; i < 3; i++) expect(await fail(b)).toBeInstanceOf(GRPCUnavailableError);
    expect(b.open).toBe(true);
    const skipped = await fail(b);
    expect(skipped).toBeInstanceOf(MemberSkippedError);
    expect((skipped as Error).message).toBe('etcd member 127.0.0.1:2379 skipped: its last 3 calls failed or timed out; one call tries it again within 1000 ms');
    expect((skipped as { isBrokenCircuitError?: boolean }).isBrokenCircuitError).toBe(true);
    t = 1_000;
    expect(b.open).toBe(false);
    await expect(ok(b)).resolves.toBe('ok');
    expect(b.open).toBe(false);
    expect(await fail(b)).toBeInstanceOf(GRPCUnavailableError); // one failure after the trial: still closed
    expect(b.open).toBe(false);
  });

  it('lets one trial through at a time, and a failed trial skips the member another second', async () => {
    const b = breaker();
    for (let i = 0; i < 3; i++) await fail(b);
    t = 1_500;
    let release!: () => void;
    const trial = b.execute(() => new Promise<void>((r) => (release = r)));
    expect(await fail(b)).toBeInstanceOf(MemberSkippedError); // the trial is running
    release();
    await trial;
    for (let i = 0; i < 3; i++) await fail(b);
    t = 1_600;
    expect(await fail(b, late())).toBeInstanceOf(MemberSkippedError);
    t = 2_600;
    expect(await fail(b, late())).toBeInstanceOf(GRPCDeadlineExceededError); // the trial hung: skipped again
    expect(b.open).toBe(true);
    t = 3_600;
    await expect(ok(b)).resolves.toBe('ok');
  });

  it('counts only failures to reach etcd: a refusal is an answer and clears the count', async () => {
    const b = breaker();
    await fail(b);
    await fail(b);
    await fail(b, new EtcdLeaseInvalidError('lease not found'));
    await fail(b);
    expect(b.open).toBe(false);
  });

  it('is what the client is given', () => {
    const f = faultHandling();
    expect(f.global).toBeInstanceOf(CallTries);
    expect(f.host!('127.0.0.1:2379')).toBeInstanceOf(MemberBreaker);
  });
});
