/**
 * A service process must not stop because a promise was rejected with nobody waiting for it: `guardProcess` (every
 * service command and `underlay up` install it) logs and counts the rejection and the process goes on. Run in a
 * child Node process, since jest handles rejections in its own way.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const RUN = path.resolve(__dirname, '../../cli/dist/commands/run.js');

const script = (guard: boolean) => `
  const run = require(${JSON.stringify(RUN)});
  const lines = [];
  if (${guard}) run.guardProcess((m) => lines.push(m));
  Promise.reject(new Error('nobody waits for me'));
  Promise.reject(new Error('nor for me'));
  setTimeout(() => { console.log(JSON.stringify({ count: run.unhandledRejections, lines })); }, 50);
`;

it('logs and counts unhandled rejections, and the process keeps running', () => {
  const r = spawnSync(process.execPath, ['-e', script(true)], { encoding: 'utf8', timeout: 20_000 });
  expect(r.status).toBe(0);
  const out = JSON.parse(r.stdout.trim()) as { count: number; lines: string[] };
  expect(out.count).toBe(2);
  expect(out.lines[0]).toMatch(/^unhandled promise rejection #1 \(kept running\): Error: nobody waits for me/);
  expect(out.lines[1]).toMatch(/^unhandled promise rejection #2 \(kept running\): Error: nor for me/);
});

it('without the guard, Node stops the process at the first one (the control)', () => {
  const r = spawnSync(process.execPath, ['-e', script(false)], { encoding: 'utf8', timeout: 20_000 });
  expect(r.status).not.toBe(0);
  expect(r.stdout).toBe('');
  expect(r.stderr).toContain('nobody waits for me');
});
