/**
 * The layers inside libs/core, checked on every import. Bottom → top, a module may import only from its own
 * layer or a lower one:
 *   1. base: the files at the root of src/ (errors, ip, options, limits, backoff, trace, index excepted),
 *      including libnetwork's option names and address spaces (options.ts)
 *   2. state/: the cluster state, its events, the fold, the engine, snapshots, network definitions, and the
 *      rules more than one decision folder needs (pool rules, network ownership)
 *   3. decisions: ipam/, network/, node/, routes/: each reads state/ (and base) and never another decision
 *      folder (what two of them share moves down into state/), nor the wire: a decision takes its own input
 *      types (ipam/requests.ts, ...)
 *   4. protocol/: the wire vocabulary (NATS RPC, HTTP API, plugin, subjects, stream) and the views (state →
 *      API shapes). Its schemas name state/'s events and definitions and parse to the decisions' input types
 *      (checked at compile time), so it sits on top.
 * A new folder has to be given a layer here before it can be imported from. src/index.ts re-exports
 * everything and is not part of any layer. Pure: reads the sources, no build needed.
 */
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const SRC = path.join(__dirname, '..', '..', 'libs', 'core', 'src');

const LAYERS: Record<string, number> = {
  '.': 1,
  state: 2,
  ipam: 3,
  network: 3,
  node: 3,
  routes: 3,
  protocol: 4,
};
const DECISIONS = 3;

/** The folder (first path segment under src/, '.' for root files) a module belongs to. */
function folderOf(rel: string): string {
  const parts = rel.split('/');
  return parts.length === 1 ? '.' : parts[0]!;
}

interface Edge {
  from: string;
  to: string;
}

/** Why an edge breaks the layering, or undefined when it is fine. */
function violation(e: Edge): string | undefined {
  const a = folderOf(e.from);
  const b = folderOf(e.to);
  const la = LAYERS[a];
  const lb = LAYERS[b];
  if (la === undefined) return `${e.from}: folder ${a}/ has no layer (add it to LAYERS in test/unit/core-layers.test.ts)`;
  if (lb === undefined) return `${e.from} → ${e.to}: folder ${b}/ has no layer`;
  if (lb > la) return `${e.from} → ${e.to}: points up (${a === '.' ? 'base' : `${a}/`} is below ${b === '.' ? 'base' : `${b}/`})`;
  if (la === DECISIONS && lb === DECISIONS && a !== b) return `${e.from} → ${e.to}: one decision folder imports another (${a}/ → ${b}/); move the shared part into state/`;
  return undefined;
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) out.push(...walk(p));
    else if (d.name.endsWith('.ts') && !d.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Every relative import, export-from and dynamic import in libs/core/src, as edges between files under src/. */
function edges(): { edges: Edge[]; files: string[] } {
  const files = walk(SRC).map((f) => path.relative(SRC, f).split(path.sep).join('/'));
  const out: Edge[] = [];
  for (const rel of files) {
    if (rel === 'index.ts') continue;
    const text = fs.readFileSync(path.join(SRC, rel), 'utf8');
    const info = ts.preProcessFile(text, true, true);
    for (const imp of info.importedFiles) {
      const spec = imp.fileName;
      if (!spec.startsWith('.')) continue;
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec)).replace(/\.js$/, '.ts');
      out.push({ from: rel, to: target });
    }
  }
  return { edges: out, files };
}

describe('libs/core layers', () => {
  const { edges: all, files } = edges();

  it('reads the sources (a sanity check on the parser)', () => {
    expect(files).toEqual(expect.arrayContaining(['state/cluster-state.ts', 'state/fold.ts', 'ipam/decide.ts', 'limits.ts']));
    expect(all).toEqual(expect.arrayContaining([{ from: 'ipam/decide.ts', to: 'state/cluster-state.ts' }]));
    expect(all.length).toBeGreaterThan(40);
  });

  it('every import resolves to a file under src/', () => {
    const known = new Set(files);
    expect(all.filter((e) => !known.has(e.to))).toEqual([]);
  });

  it('no import points up a layer, and no decision folder imports another', () => {
    expect(all.map(violation).filter((v): v is string => v !== undefined)).toEqual([]);
  });

  it('the rule itself refuses up edges and edges between decision folders', () => {
    expect(violation({ from: 'errors.ts', to: 'state/events.ts' })).toMatch(/points up/);
    expect(violation({ from: 'state/cluster-state.ts', to: 'network/decide.ts' })).toMatch(/points up/);
    expect(violation({ from: 'state/events.ts', to: 'protocol/api.ts' })).toMatch(/points up/);
    expect(violation({ from: 'ipam/decide.ts', to: 'protocol/ipam.ts' })).toMatch(/points up/);
    expect(violation({ from: 'network/decide.ts', to: 'protocol/plugin.ts' })).toMatch(/points up/);
    expect(violation({ from: 'routes/desired.ts', to: 'protocol/api.ts' })).toMatch(/points up/);
    expect(violation({ from: 'network/decide.ts', to: 'ipam/decide.ts' })).toMatch(/decision folder/);
    expect(violation({ from: 'ipam/decide.ts', to: 'node/interfaces.ts' })).toMatch(/decision folder/);
    expect(violation({ from: 'newfolder/x.ts', to: 'ip.ts' })).toMatch(/no layer/);
    expect(violation({ from: 'ipam/leaks.ts', to: 'ipam/decide.ts' })).toBeUndefined();
    expect(violation({ from: 'protocol/ipam.ts', to: 'ipam/requests.ts' })).toBeUndefined();
    expect(violation({ from: 'protocol/views.ts', to: 'state/cluster-state.ts' })).toBeUndefined();
    expect(violation({ from: 'state/fold.ts', to: 'ip.ts' })).toBeUndefined();
  });
});
