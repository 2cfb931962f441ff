/**
 * Input generators and bookkeeping for the fuzz suite (test/e2e/fuzz.test.ts), on fast-check:
 *
 * - `fromSchema`: values of a zod schema, found by walking zod's own definitions (types, lengths, patterns,
 *   bounds, optional keys), so a schema change changes the inputs; `hints` give domain values (CIDRs, ids) by
 *   property name, so generated requests also get past the checks zod cannot describe.
 * - `mutated`: a valid value with one to three changes: a wrong type, a huge string, deep nesting, unicode
 *   (lone surrogates, NUL, combining marks), a number at a bound, a key dropped, an unknown or `__proto__` key,
 *   an array repeated to many elements.
 * - `rawText`: bytes and text that are not the request at all (invalid UTF-8, broken JSON, deep nesting,
 *   arbitrary JSON).
 * - `toWire`: JSON text of a generated value; deep nesting is spliced in as text (JSON.stringify would
 *   overflow its stack), so a value may hold a `deep(n)` placeholder anywhere.
 * - `Findings`: inputs per surface and every invalid answer, with the input that caused it.
 */
import * as fc from 'fast-check';
import type { z } from 'zod';

// ---------------------------------------------------------------------------------------------
// Seeds and scale

/** The seed every surface's run starts from: fixed (reproducible CI), or `UNDERLAY_FUZZ_SEED`. */
export function fuzzSeed(): number {
  const s = process.env.UNDERLAY_FUZZ_SEED;
  if (s === undefined || s === '') return 20_261_204;
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new Error(`UNDERLAY_FUZZ_SEED must be an integer, not ${JSON.stringify(s)}`);
  return n | 0;
}

/** `UNDERLAY_FUZZ_SCALE` multiplies every surface's number of runs (default 1; 10 for a long night run). */
export function fuzzScale(): number {
  const s = Number(process.env.UNDERLAY_FUZZ_SCALE ?? '1');
  return Number.isFinite(s) && s > 0 ? s : 1;
}

// ---------------------------------------------------------------------------------------------
// Deep nesting, spliced in as text

const DEEP_MARK = '\u0000underlay-fuzz-deep:';

/** A placeholder for `n` nested arrays (`[[[…]]]`), written out by `toWire`. */
export const deep = (n: number): string => `${DEEP_MARK}${n}`;

/** The JSON text of a generated value, with every `deep(n)` placeholder written out as n nested arrays. */
export function toWire(v: unknown): string {
  const text = JSON.stringify(v) ?? 'null';
  if (!text.includes('underlay-fuzz-deep:')) return text;
  return text.replace(/"\\u0000underlay-fuzz-deep:(\d+)"/g, (_m, n: string) => `${'['.repeat(Number(n))}${']'.repeat(Number(n))}`);
}

/** A short, printable view of an input for a report (the head of it, and its size). */
export function preview(v: unknown, max = 300): string {
  let s: string;
  if (typeof v === 'string') s = v;
  else if (v instanceof Uint8Array) s = `bytes:${Buffer.from(v.subarray(0, max)).toString('hex')}`;
  else {
    try {
      s = toWire(v);
    } catch (e) {
      s = `<${(e as Error).message}>`;
    }
  }
  const printable = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return printable.length > max ? `${printable.slice(0, max)}… (${s.length} chars)` : printable;
}

// ---------------------------------------------------------------------------------------------
// Strings and numbers at their edges

/** Lone surrogates, NUL, RTL marks, combining characters, emoji: what breaks naive byte counts and logs. */
export const nastyString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.string({ unit: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 3 }),
  fc.constantFrom('', ' ', '\u0000', 'a\u0000b', '\u202eevil', 'e\u0301', '👩‍👩‍👧', '..', '../../etc/passwd', '%00', '%zz', '*', '>', 'a.b.c', '~', '$JS.API', '\r\n', 'null', 'undefined', '__proto__', 'constructor'),
);

/** Numbers at every bound the code might have: 0, ±1, 2^31±1, 2^32, 2^53±1, huge, tiny, -0, fractions. */
export const edgeNumber: fc.Arbitrary<number> = fc.constantFrom(
  0, -0, 1, -1, 0.5, -0.5, 1e-300, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 1e21, 1.7976931348623157e308, -1.7976931348623157e308,
);

/** Strings of 1 KiB to `max` characters (`x`, or a repeated multi-byte character). */
export const hugeString = (max: number): fc.Arbitrary<string> =>
  fc.tuple(fc.integer({ min: 1024, max: Math.max(1024, max) }), fc.constantFrom('x', 'é', '€', '😀', '\u0000')).map(([n, c]) => c.repeat(Math.max(1, Math.floor(n / c.length))));

// ---------------------------------------------------------------------------------------------
// Values of a zod schema

/** Domain values by property name (used alongside what the schema itself allows). */
export type Hints = Record<string, fc.Arbitrary<unknown>>;

interface ZodDefLike {
  type: string;
  checks?: { _zod: { def: Record<string, unknown> } }[];
  [k: string]: unknown;
}
const defOf = (s: unknown): ZodDefLike => (s as { _zod: { def: ZodDefLike } })._zod.def;
const checksOf = (d: ZodDefLike) => (d.checks ?? []).map((c) => c._zod.def);

const OPTIONAL_KINDS = new Set(['optional', 'default', 'prefault']);

function stringArb(d: ZodDefLike): fc.Arbitrary<string> {
  let min = 0;
  let max = Infinity;
  const patterns: RegExp[] = [];
  for (const c of checksOf(d)) {
    if (c.check === 'min_length') min = Math.max(min, c.minimum as number);
    else if (c.check === 'max_length') max = Math.min(max, c.maximum as number);
    else if (c.check === 'length_equals') min = max = c.length as number;
    else if (c.check === 'string_format' && c.pattern instanceof RegExp) patterns.push(c.pattern);
  }
  const fits = (s: string) => s.length >= min && s.length <= max && patterns.every((p) => p.test(s));
  if (patterns.length > 0) {
    const sm = fc.stringMatching(patterns[0]!, { size: 'small' }).filter(fits);
    if (!Number.isFinite(max)) return sm;
    // Now and then the longest string the schema takes (a match repeated, when that still matches).
    const longest = sm.map((x) => {
      const y = x.length > 0 ? x.repeat(Math.ceil(max / x.length)).slice(0, max) : x;
      return fits(y) ? y : x;
    });
    return fc.oneof({ weight: 5, arbitrary: sm }, { weight: 1, arbitrary: longest });
  }
  const small = Math.min(max, min + 16);
  const arbs: fc.Arbitrary<string>[] = [fc.string({ minLength: min, maxLength: small }), fc.string({ unit: 'grapheme', minLength: min, maxLength: small }).filter(fits)];
  // The longest the schema allows (up to 64 KiB, beyond that the size limits of the transport speak).
  if (Number.isFinite(max) && max > small && max <= 65_536) arbs.push(fc.constantFrom('x', 'é').map((c) => c.repeat(max)));
  return fc.oneof(...arbs);
}

function numberArb(d: ZodDefLike): fc.Arbitrary<number> {
  let int = false;
  let min = -Number.MAX_SAFE_INTEGER;
  let max = Number.MAX_SAFE_INTEGER;
  for (const c of checksOf(d)) {
    if (c.check === 'number_format') int = int || ['safeint', 'int32', 'uint32'].includes(c.format as string);
    else if (c.check === 'greater_than') min = Math.max(min, (c.value as number) + (c.inclusive ? 0 : int ? 1 : Number.EPSILON));
    else if (c.check === 'less_than') max = Math.min(max, (c.value as number) - (c.inclusive ? 0 : int ? 1 : Number.EPSILON));
  }
  if (int) {
    const lo = Math.ceil(min);
    const hi = Math.floor(max);
    return fc.oneof({ weight: 4, arbitrary: fc.integer({ min: lo, max: hi }) }, { weight: 1, arbitrary: fc.constantFrom(lo, hi) });
  }
  return fc.double({ min, max, noNaN: true, noDefaultInfinity: true });
}

/** Generated values of `schema` (mostly valid: refinements zod cannot describe are left to `hints`). */
export function fromSchema(schema: z.ZodType, hints: Hints = {}, depth = 0): fc.Arbitrary<unknown> {
  const d = defOf(schema);
  const inner = (s: unknown) => fromSchema(s as z.ZodType, hints, depth + 1);
  switch (d.type) {
    case 'string':
      return stringArb(d);
    case 'number':
      return numberArb(d);
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'undefined':
      return fc.constant(undefined);
    case 'literal':
      return fc.constantFrom(...(d.values as unknown[]));
    case 'enum':
      return fc.constantFrom(...Object.values(d.entries as Record<string, unknown>));
    case 'optional':
    case 'default':
    case 'prefault':
      return fc.option(inner(d.innerType), { nil: undefined, freq: 3 });
    case 'nullable':
      return fc.option(inner(d.innerType), { nil: null, freq: 4 });
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      return inner(d.innerType);
    case 'pipe':
      return inner(d.in);
    case 'lazy':
      return depth > 6 ? fc.constant(null) : inner((d.getter as () => unknown)());
    case 'object': {
      if (depth > 8) return fc.constant({});
      const shape = d.shape as Record<string, z.ZodType>;
      const model: Record<string, fc.Arbitrary<unknown>> = {};
      const requiredKeys: string[] = [];
      for (const [k, s] of Object.entries(shape)) {
        const own = inner(s);
        const hint = hints[k];
        model[k] = hint ? fc.oneof({ weight: 3, arbitrary: hint }, { weight: 1, arbitrary: own }) : own;
        if (!OPTIONAL_KINDS.has(defOf(s).type)) requiredKeys.push(k);
      }
      return fc.record(model, { requiredKeys }).map((o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)));
    }
    case 'array': {
      let min = 0;
      let max = 4;
      for (const c of checksOf(d)) {
        if (c.check === 'min_length') min = c.minimum as number;
        else if (c.check === 'max_length') max = Math.min(Math.max(min, 4), c.maximum as number);
      }
      return fc.array(inner(d.element), { minLength: min, maxLength: Math.max(min, max) });
    }
    case 'record': {
      const key = fromSchema(d.keyType as z.ZodType, {}, depth + 1).filter((k): k is string => typeof k === 'string');
      return fc.dictionary(fc.oneof(key, fc.constantFrom('parent', 'macvlan_mode', 'ipvlan_mode', 'block_size', 'com.docker.network.generic')), inner(d.valueType), { maxKeys: 4 });
    }
    case 'union':
      return fc.oneof(...(d.options as unknown[]).map(inner));
    case 'intersection':
      return fc.tuple(inner(d.left), inner(d.right)).map(([a, b]) => (a && b && typeof a === 'object' && typeof b === 'object' ? { ...a, ...b } : b));
    default:
      // unknown, any, transform, custom: any JSON.
      return fc.jsonValue({ maxDepth: 2 });
  }
}

// ---------------------------------------------------------------------------------------------
// Mutations of a valid value

type Step = string | number;

/** Every path into a JSON value (the root included), breadth first, at most `limit`. */
function pathsOf(v: unknown, limit = 200): Step[][] {
  const out: Step[][] = [];
  const queue: [unknown, Step[]][] = [[v, []]];
  while (queue.length > 0 && out.length < limit) {
    const [x, p] = queue.shift()!;
    out.push(p);
    if (Array.isArray(x)) x.forEach((y, i) => queue.push([y, [...p, i]]));
    else if (x && typeof x === 'object') for (const k of Object.keys(x)) queue.push([(x as Record<string, unknown>)[k], [...p, k]]);
  }
  return out;
}

const replacement: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constant([]), fc.constant({}), fc.jsonValue({ maxDepth: 2 })) },
  { weight: 3, arbitrary: nastyString },
  { weight: 2, arbitrary: edgeNumber },
  { weight: 1, arbitrary: hugeString(70_000) },
  { weight: 1, arbitrary: fc.integer({ min: 50, max: 20_000 }).map(deep) },
  { weight: 1, arbitrary: fc.array(nastyString, { maxLength: 5 }) },
  { weight: 1, arbitrary: fc.dictionary(nastyString, nastyString, { maxKeys: 3 }) },
);

const mutation = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: replacement }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), at: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('addKey' as const),
      at: fc.nat(),
      key: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'node', 'extra', 'Err', 'ok'), nastyString),
      value: replacement,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('repeat' as const), at: fc.nat(), times: fc.integer({ min: 2, max: 5_000 }) }) },
);
export type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

/** Characters a `repeat` mutation may grow a value to. */
const REPEAT_BUDGET = 200_000;

const ownSet = (o: object, k: string, v: unknown) => Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });

/** `v` (not changed) with the mutations applied to a copy. */
export function applyMutations(v: unknown, ms: readonly Mutation[]): unknown {
  let root: unknown = v === undefined ? undefined : JSON.parse(JSON.stringify(v));
  for (const m of ms) {
    // A copy: fast-check hands out the same instance of a constant ({}, []) every time.
    const value = 'value' in m ? structuredClone(m.value) : undefined;
    const paths = pathsOf(root);
    const p = paths[m.at % paths.length]!;
    const parentPath = p.slice(0, -1);
    const last = p[p.length - 1];
    let parent: unknown = root;
    for (const s of parentPath) parent = (parent as Record<Step, unknown>)[s];
    const target = p.length === 0 ? root : (parent as Record<Step, unknown>)[last!];
    switch (m.op) {
      case 'set':
        if (p.length === 0) root = value;
        else if (Array.isArray(parent)) parent[last as number] = value;
        else ownSet(parent as object, last as string, value);
        break;
      case 'delete':
        if (p.length === 0) root = undefined;
        else if (Array.isArray(parent)) parent.splice(last as number, 1);
        else delete (parent as Record<string, unknown>)[last as string];
        break;
      case 'addKey': {
        const o = target && typeof target === 'object' && !Array.isArray(target) ? target : root && typeof root === 'object' && !Array.isArray(root) ? root : undefined;
        if (o) ownSet(o, m.key, value);
        else root = ownSet({}, m.key, value);
        break;
      }
      case 'repeat': {
        const arr = Array.isArray(target) ? target : undefined;
        if (arr && arr.length > 0) {
          // Many elements, within REPEAT_BUDGET characters of JSON (a huge string repeated would not fit in memory).
          const copy = arr.slice();
          const times = Math.min(m.times, Math.floor(50_000 / copy.length), Math.floor(REPEAT_BUDGET / Math.max(1, (JSON.stringify(copy) ?? '').length)));
          for (let i = 1; i < times; i++) arr.push(...copy);
        } else if (typeof target === 'string' && p.length > 0) {
          const s = target.repeat(Math.min(m.times, Math.max(1, Math.floor(REPEAT_BUDGET / Math.max(1, target.length)))));
          if (Array.isArray(parent)) parent[last as number] = s;
          else ownSet(parent as object, last as string, s);
        }
        break;
      }
    }
  }
  return root;
}

/** One of `examples`, changed by one to three mutations. */
export function mutated(examples: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  return fc.tuple(examples, fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([v, ms]) => applyMutations(v, ms));
}

// ---------------------------------------------------------------------------------------------
// Bytes and text that are not the request

/** Raw request bodies: bytes (invalid UTF-8 included), text, broken and deep JSON, arbitrary JSON. */
export const rawBody: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 300 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }).map((s) => Buffer.from(s, 'utf8')) },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => Buffer.from(JSON.stringify(v) ?? 'null', 'utf8')) },
  {
    weight: 2,
    arbitrary: fc
      .constantFrom('', ' ', '\n', 'null', 'true', '0', '-0', '1e999', '[]', '{}', '""', '"x"', '{', '}', '[[[', '{"a":}', '{"a":1,}', '\u0000', '{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}', '\ufeff{}', '{"a":"\\ud800"}', 'NaN', 'Infinity')
      .map((s) => Buffer.from(s, 'utf8')),
  },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 100_000 }).map((n) => Buffer.from(`${'['.repeat(n)}${']'.repeat(n)}`)) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 50_000 }).map((n) => Buffer.from(`${'{"a":'.repeat(n)}1${'}'.repeat(n)}`)) },
);

// ---------------------------------------------------------------------------------------------
// Bookkeeping

export interface Finding {
  surface: string;
  target: string;
  problem: string;
  input: string;
  answer: string;
}

/** Counts inputs per surface and keeps every invalid answer (the first few of each kind in full). */
export class Findings {
  readonly counts = new Map<string, number>();
  readonly targets = new Map<string, Set<string>>();
  readonly all: Finding[] = [];

  count(surface: string, target: string): void {
    this.counts.set(surface, (this.counts.get(surface) ?? 0) + 1);
    let t = this.targets.get(surface);
    if (!t) this.targets.set(surface, (t = new Set()));
    t.add(target);
  }

  /** How answers went, per surface: `<target> <outcome>` → count (printed with UNDERLAY_FUZZ_VERBOSE=1, to see how deep inputs reach). */
  readonly outcomes = new Map<string, Map<string, number>>();

  outcome(surface: string, key: string): void {
    let m = this.outcomes.get(surface);
    if (!m) this.outcomes.set(surface, (m = new Map()));
    m.set(key, (m.get(key) ?? 0) + 1);
  }

  /** One line per surface: its outcomes, most frequent first. */
  outcomeReport(): string {
    return [...this.outcomes.entries()]
      .map(([surface, m]) => `fuzz: ${surface} outcomes: ${[...m.entries()].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ×${n}`).join(', ')}`)
      .join('\n');
  }

  add(f: Finding): void {
    this.all.push(f);
  }

  of(surface: string): Finding[] {
    return this.all.filter((f) => f.surface === surface);
  }

  /** Findings (of one surface, or all) grouped by surface, target and problem: how many, and the first input of each. */
  report(surface?: string): string {
    const groups = new Map<string, { n: number; first: Finding }>();
    for (const f of surface ? this.of(surface) : this.all) {
      const key = `${f.surface} ${f.target}: ${f.problem}`;
      const g = groups.get(key);
      if (g) g.n++;
      else groups.set(key, { n: 1, first: f });
    }
    return [...groups.entries()].map(([k, g]) => `${k} (×${g.n})\n    input:  ${g.first.input}\n    answer: ${g.first.answer}`).join('\n');
  }
}
