/**
 * underlay's container image, built offline in a lab dockerd (no registry on these machines):
 *
 * 1. A Node 20 base in place of `node:20-bookworm-slim`, made from this machine's own files as the busybox image
 *    is: /usr/bin/node and the shared libraries `ldd` names, npm from /usr/lib/node_modules/npm, busybox's applets
 *    for /bin/sh and the tools a Dockerfile's RUN uses, /etc/passwd with root and node. `docker import`ed as
 *    NODE_BASE_IMAGE.
 * 2. The repository's Dockerfile, built with `--build-arg NODE_IMAGE=<that base>` from a build context holding the
 *    sources (what .dockerignore lets through) and a copy of npm's cache in .npm-offline/_cacache, so the build
 *    stage's `npm ci` runs offline. The result is UNDERLAY_IMAGE.
 * 3. Other dockerds get it by `docker save` / `docker load`; so do later suites: the saved image is kept in
 *    <tmpdir>/underlay-image-cache/<sha256 of the build context's sources>.tar (one, the latest), so the image is
 *    built once per change of its sources (a build takes a minute or more even on overlay2, the storage driver of
 *    the suites that build it: DockerdOptions.storageDriver; a load, seconds).
 *
 * Budgets: 'image build' and 'image load' in budgets.json (measured, times the margin and the machine factor).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { labBudgetMs, labOverrun, recordLabStep } from './budget';
import type { Dockerd } from './dockerd';
import { requireExecutable, runOk } from './run';

export const NODE_BASE_IMAGE = 'underlay-lab/node:20-bookworm-slim';
export const UNDERLAY_IMAGE = 'underlay/underlay:lab';

const ROOT = path.resolve(__dirname, '../..');

/** The shared libraries `ldd` lists for a binary (absolute paths, the loader included). */
async function sharedLibraries(bin: string): Promise<string[]> {
  const out = await runOk(requireExecutable('ldd', 'install libc-bin'), [bin]);
  const libs = new Set<string>();
  for (const line of out.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) libs.add(m[1]!);
  }
  return [...libs];
}

function copyPreserving(src: string, rootfs: string): void {
  const dst = path.join(rootfs, src);
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  fs.cpSync(fs.realpathSync(src), dst, { recursive: true, dereference: true });
}

const baseTars = new Map<string, Promise<string>>();

/** The Node base's rootfs tar (built once per lab directory). */
export function buildNodeBaseTar(labDir: string): Promise<string> {
  let p = baseTars.get(labDir);
  if (!p) {
    p = (async () => {
      const busybox = requireExecutable('busybox', 'install busybox-static');
      const node = fs.realpathSync(requireExecutable('node'));
      const npmDir = '/usr/lib/node_modules/npm';
      if (!fs.existsSync(path.join(npmDir, 'bin/npm-cli.js'))) throw new Error(`no npm at ${npmDir}: the Node base is made from this machine's Node 20 with its npm`);
      const rootfs = path.join(labDir, 'node-base-rootfs');
      const tar = path.join(labDir, 'node-base.tar');
      fs.rmSync(rootfs, { recursive: true, force: true });
      for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'usr/local/bin', 'etc', 'root', 'var', 'tmp', 'home/node']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
      fs.chmodSync(path.join(rootfs, 'tmp'), 0o1777);
      fs.copyFileSync(busybox, path.join(rootfs, 'bin/busybox'));
      fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
      for (const a of (await runOk(busybox, ['--list'])).split('\n').map((s) => s.trim())) {
        if (a && a !== 'busybox' && /^[\w.[-]+$/.test(a)) fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
      }
      fs.symlinkSync('/bin/busybox', path.join(rootfs, 'usr/sbin/nologin'));
      fs.symlinkSync('/bin/busybox', path.join(rootfs, 'usr/bin/env')); // npm's `#!/usr/bin/env node`
      fs.copyFileSync(node, path.join(rootfs, 'usr/bin/node'));
      fs.chmodSync(path.join(rootfs, 'usr/bin/node'), 0o755);
      for (const lib of await sharedLibraries(node)) copyPreserving(lib, rootfs);
      copyPreserving(npmDir, rootfs);
      fs.symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', path.join(rootfs, 'usr/bin/npm'));
      fs.symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', path.join(rootfs, 'usr/bin/npx'));
      fs.writeFileSync(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n');
      fs.writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\nnode:x:1000:\n');
      fs.writeFileSync(path.join(rootfs, 'etc/nsswitch.conf'), 'hosts: files dns\n');
      await runOk(busybox, ['tar', '-C', rootfs, '-cf', tar, '.'], { timeoutMs: 120_000 });
      fs.rmSync(rootfs, { recursive: true, force: true });
      return tar;
    })();
    baseTars.set(labDir, p);
    p.catch(() => baseTars.delete(labDir));
  }
  return p;
}

/** The directory npm keeps its cache in (`npm config get cache`). */
async function npmCacheDir(): Promise<string> {
  return (await runOk(requireExecutable('npm'), ['config', 'get', 'cache'], { cwd: ROOT })).trim();
}

const CONTEXT_FILES = ['Dockerfile', '.dockerignore', 'package.json', 'package-lock.json', 'tsconfig.base.json', 'tsconfig.json'];
const CONTEXT_DIRS = ['libs', 'services', 'cli', 'deploy/image', '.npm-offline'];
const skip = (src: string) => /(^|\/)(node_modules|dist)(\/|$)|\.tsbuildinfo$/.test(path.relative(ROOT, src));
const CACHE_DIR = path.join(os.tmpdir(), 'underlay-image-cache');

/** The files of the build context, sorted (the npm cache aside). */
function contextFiles(): string[] {
  const out = CONTEXT_FILES.map((f) => path.join(ROOT, f));
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (skip(p)) continue;
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  for (const d of CONTEXT_DIRS) walk(path.join(ROOT, d));
  return out.sort();
}

/** sha256 over the build context's file names and contents (what decides the image). */
export function contextHash(): string {
  const h = createHash('sha256');
  for (const f of contextFiles()) h.update(path.relative(ROOT, f)).update('\0').update(fs.readFileSync(f)).update('\0');
  return h.digest('hex').slice(0, 16);
}

/** A build context: the files the Dockerfile copies, and npm's cache for an offline `npm ci`. */
export async function buildContext(labDir: string): Promise<string> {
  const ctx = path.join(labDir, 'image-context');
  fs.rmSync(ctx, { recursive: true, force: true });
  fs.mkdirSync(ctx, { recursive: true });
  for (const f of CONTEXT_FILES) fs.copyFileSync(path.join(ROOT, f), path.join(ctx, f));
  for (const d of CONTEXT_DIRS) fs.cpSync(path.join(ROOT, d), path.join(ctx, d), { recursive: true, filter: (src) => !skip(src) });
  const cache = path.join(await npmCacheDir(), '_cacache');
  if (!fs.existsSync(cache)) throw new Error(`npm has no cache at ${cache}: run npm ci once (scripts/install-deps.sh does) so the image can be built offline`);
  fs.cpSync(cache, path.join(ctx, '.npm-offline/_cacache'), { recursive: true });
  return ctx;
}

async function hasImage(d: Dockerd, image: string): Promise<boolean> {
  return (await d.docker(['image', 'inspect', '--format', '{{.Id}}', image])).code === 0;
}

/**
 * UNDERLAY_IMAGE in `d`: already there, loaded from the cache of an earlier build of the same sources, or built from
 * the repository's Dockerfile on the offline Node base (and then saved to the cache).
 */
export async function buildUnderlayImage(d: Dockerd): Promise<string> {
  if (await hasImage(d, UNDERLAY_IMAGE)) return UNDERLAY_IMAGE;
  const cached = path.join(CACHE_DIR, `${contextHash()}.tar`);
  if (fs.existsSync(cached)) {
    const started = Date.now();
    await d.dockerOk(['load', '-i', cached], { timeoutMs: labBudgetMs('image load') });
    recordLabStep('image load', Date.now() - started);
    if (await hasImage(d, UNDERLAY_IMAGE)) return UNDERLAY_IMAGE;
  }
  if (!(await hasImage(d, NODE_BASE_IMAGE))) {
    const tar = await buildNodeBaseTar(d.lab.dir);
    await d.dockerOk(['import', '--change', 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '--change', 'CMD ["node"]', tar, NODE_BASE_IMAGE]);
  }
  const ctx = await buildContext(d.lab.dir);
  const started = Date.now();
  const budget = labBudgetMs('image build');
  const r = await d.docker(['build', '--build-arg', `NODE_IMAGE=${NODE_BASE_IMAGE}`, '-t', UNDERLAY_IMAGE, ctx], { timeoutMs: budget, env: { DOCKER_BUILDKIT: '0' } });
  recordLabStep('image build', Date.now() - started);
  fs.rmSync(ctx, { recursive: true, force: true });
  if (r.code !== 0) {
    const why = r.timedOut ? labOverrun('image build', `on ${d.host.name}`) : `exit ${r.code}`;
    throw new Error(`docker build of ${UNDERLAY_IMAGE} on ${d.host.name} failed (${why}):\n${r.stdout.split('\n').slice(-40).join('\n')}\n${r.stderr}`);
  }
  // Keep this build for the next suite (one image: older ones go).
  fs.rmSync(CACHE_DIR, { recursive: true, force: true });
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = `${cached}.partial`;
  await d.dockerOk(['save', '-o', tmp, UNDERLAY_IMAGE], { timeoutMs: labBudgetMs('image load') });
  fs.renameSync(tmp, cached);
  return UNDERLAY_IMAGE;
}

/** Copies an image from one dockerd to another (docker save | docker load through a file). */
export async function copyImage(from: Dockerd, to: Dockerd, image: string): Promise<void> {
  if (await hasImage(to, image)) return;
  const file = path.join(from.lab.dir, `${image.replace(/[^\w.-]+/g, '_')}.tar`);
  const started = Date.now();
  const budget = labBudgetMs('image load');
  await from.dockerOk(['save', '-o', file, image], { timeoutMs: budget });
  await to.dockerOk(['load', '-i', file], { timeoutMs: budget });
  recordLabStep('image load', Date.now() - started);
  fs.rmSync(file, { force: true });
}
