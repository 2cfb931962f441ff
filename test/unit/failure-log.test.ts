/**
 * failureLog (libs/adapters/src/runtime/failure-log.ts): a condition that lasts is logged when it starts, when its
 * text changes, at 10, 100, 1000 … failed passes, and once when it ends, with the count.
 */
import { failureLog } from '@underlay/adapters';

describe('failureLog', () => {
  it('logs the start, a new text, reminders at powers of ten and the recovery with the count', () => {
    const lines: string[] = [];
    const f = failureLog((l) => lines.push(l), 'report to the controller');
    const enoent = new Error('connect ENOENT /var/run/docker.sock');
    for (let i = 0; i < 150; i++) f.failed(enoent);
    expect(f.failures).toBe(150);
    expect(lines).toEqual([
      'report to the controller failed: connect ENOENT /var/run/docker.sock (retrying; logged again when it changes)',
      'report to the controller still failing after 10 passes: connect ENOENT /var/run/docker.sock',
      'report to the controller still failing after 100 passes: connect ENOENT /var/run/docker.sock',
    ]);
    f.failed(new Error('no controller answered'));
    expect(lines.at(-1)).toBe('report to the controller failed: no controller answered (151 failed passes)');
    f.recovered();
    expect(lines.at(-1)).toBe('report to the controller works again after 151 failed passes (last: no controller answered)');
    expect(lines).toHaveLength(5);
    // A success while nothing failed says nothing; a new failure starts over.
    f.recovered();
    f.failed('etcd stopped');
    expect(lines).toHaveLength(6);
    expect(lines.at(-1)).toBe('report to the controller failed: etcd stopped (retrying; logged again when it changes)');
    f.recovered();
    expect(lines.at(-1)).toBe('report to the controller works again after 1 failed pass (last: etcd stopped)');
  });
});
