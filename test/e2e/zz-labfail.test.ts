import * as fs from 'node:fs';
import { importBusybox, startDockerd, startLabEtcd, withLab, BUSYBOX_IMAGE, sleep } from '../lab';
describe('failing lab', () => {
  const ctx = withLab({ hosts: ['h1', 'h2'] });
  test('fails halfway', async () => {
    fs.writeFileSync('/tmp/ul-fail-info', JSON.stringify({ prefix: ctx.lab.prefix, dir: ctx.lab.dir }));
    await startLabEtcd(ctx.lab);
    const d = await startDockerd(ctx.lab, 'h1');
    await importBusybox(d);
    await d.dockerOk(['run', '-d', '--network', 'none', BUSYBOX_IMAGE, 'sleep', '3600']);
    ctx.lab.spawnIn('h2', 'sleep', ['3600']);
    if (process.env.UL_HANG) await sleep(600_000);
    await d.dockerOk(['run', '--rm', 'no-such-image:latest', 'true']);
  }, 700_000);
});
