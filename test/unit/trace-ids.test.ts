/**
 * The ids the controller's and agents' spans get (libs/adapters/src/telemetry/ids.ts): W3C Trace Context's form
 * (lowercase hex, 32 and 16 digits, not all zero), from the operating system's generator.
 */
import * as crypto from 'node:crypto';

jest.mock('node:crypto', () => {
  const real = jest.requireActual<typeof import('node:crypto')>('node:crypto');
  return { ...real, randomFillSync: jest.fn(real.randomFillSync) };
});

// A fresh module each test (its pool of random words is module state).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const load = (): typeof import('../../libs/adapters/src/telemetry/ids') => require('../../libs/adapters/src/telemetry/ids');

describe('span and trace ids', () => {
  beforeEach(() => jest.resetModules());

  it('are lowercase hex of the W3C lengths, and do not repeat', () => {
    const { CryptoIdGenerator } = load();
    const g = new CryptoIdGenerator();
    const traces = new Set<string>();
    const spans = new Set<string>();
    // More than one fill of the generator's pool (1,024 words).
    for (let i = 0; i < 3000; i++) {
      const t = g.generateTraceId();
      const s = g.generateSpanId();
      expect(t).toMatch(/^[0-9a-f]{32}$/);
      expect(s).toMatch(/^[0-9a-f]{16}$/);
      traces.add(t);
      spans.add(s);
    }
    expect(traces.size).toBe(3000);
    expect(spans.size).toBe(3000);
  });

  it('are never all zero, even when the random bits are', () => {
    // The module registry was reset: the crypto module ids.ts gets is the one required now.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const fresh = require('node:crypto') as typeof crypto;
    (fresh.randomFillSync as unknown as jest.Mock).mockImplementation((a: Uint32Array) => a.fill(0));
    const { CryptoIdGenerator } = load();
    const g = new CryptoIdGenerator();
    expect(g.generateTraceId()).toBe('00000000000000000000000000000001');
    expect(g.generateSpanId()).toBe('0000000000000001');
  });

  it('spread their bits: each hex digit position takes all 16 values', () => {
    const { CryptoIdGenerator } = load();
    const g = new CryptoIdGenerator();
    const seen = Array.from({ length: 32 }, () => new Set<string>());
    for (let i = 0; i < 2000; i++) [...g.generateTraceId()].forEach((c, k) => seen[k]!.add(c));
    expect(seen.map((s) => s.size)).toEqual(Array(32).fill(16));
  });
});
