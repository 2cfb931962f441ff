// The lab's waitFor: its timeout names the slow step (and the last error), and it
// stops at once, with the process's log, when the process it watches exits.
import { waitFor } from '../lab/wait';

describe('lab waitFor', () => {
  it('returns the first truthy value', async () => {
    let n = 0;
    await expect(waitFor(() => (++n >= 3 ? n : 0), { timeoutMs: 2_000, intervalMs: 1, what: 'three polls' })).resolves.toBe(3);
  });

  it('says which step timed out, with the last error', async () => {
    const started = Date.now();
    await expect(
      waitFor(
        () => {
          throw new Error('connection refused');
        },
        { timeoutMs: 50, intervalMs: 10, what: 'etcd at http://x/health' },
      ),
    ).rejects.toThrow('Timed out after 50 ms waiting for etcd at http://x/health; last error: connection refused');
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('fails fast with the log when the watched process exits', async () => {
    const proc = { name: 'etcd-1', exitInfo: () => ({ code: 1, signal: null }), describe: () => 'etcd-1 [pid 7] exited; log tail' };
    await expect(waitFor(() => false, { timeoutMs: 60_000, what: 'etcd to be healthy', proc })).rejects.toThrow(
      'etcd-1 exited while waiting for etcd to be healthy\netcd-1 [pid 7] exited; log tail',
    );
  });
});
