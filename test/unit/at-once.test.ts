/** eachAtOnce (libs/adapters/src/runtime/at-once.ts): how snapshot parts are read a few at once. */
import { eachAtOnce } from '@underlay/adapters';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('eachAtOnce', () => {
  it('runs every index once, at most `limit` at a time, started in index order', async () => {
    const started: number[] = [];
    let running = 0;
    let most = 0;
    await eachAtOnce(10, 3, async (i) => {
      started.push(i);
      most = Math.max(most, ++running);
      await tick(((i * 7) % 5) + 1);
      running--;
    });
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(most).toBe(3);
    await eachAtOnce(0, 3, async () => {
      throw new Error('never called');
    });
  });

  it('starts nothing more once a call returns false, and waits for those running', async () => {
    const started: number[] = [];
    const ended: number[] = [];
    await eachAtOnce(10, 3, async (i) => {
      started.push(i);
      await tick(i === 1 ? 1 : 10);
      ended.push(i);
      return i !== 1;
    });
    expect(started).toEqual([0, 1, 2]);
    expect(ended.sort()).toEqual([0, 1, 2]);
  });

  it('rejects with the first error and starts nothing more', async () => {
    const started: number[] = [];
    await expect(
      eachAtOnce(10, 2, async (i) => {
        started.push(i);
        await tick(1);
        if (i === 2) throw new Error('part 2 failed');
      }),
    ).rejects.toThrow('part 2 failed');
    await tick(20);
    expect(started.length).toBeLessThanOrEqual(4);
    expect(started).toContain(2);
  });
});
