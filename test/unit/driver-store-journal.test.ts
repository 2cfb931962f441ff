/**
 * The agent store's allocations (services/node-agent/src/driver/store.ts) on a real temporary directory: a snapshot
 * (`allocations.json`) and a journal next to it (`allocations.log`). A change appends one line and is durable before
 * it returns, without rewriting the snapshot; a reload replays the journal; a line a crash cut is dropped, a damaged one
 * makes the allocations rebuilt; past its bound the journal is compacted, and a crash in the middle of that reloads to
 * the same map; an older agent's directory (a snapshot alone) loads.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { COMPACT_MIN_LINES, LocalStore, type AllocInfo } from '../../services/node-agent/src/driver/store';

// Writes, syncs, renames and cuts are observed through pass-through mocks (node:fs's own properties cannot be spied on).
jest.mock('node:fs', () => {
  const real = jest.requireActual<typeof import('node:fs')>('node:fs');
  return {
    ...real,
    writeSync: jest.fn(real.writeSync),
    fsyncSync: jest.fn(real.fsyncSync),
    fdatasyncSync: jest.fn(real.fdatasyncSync),
    renameSync: jest.fn(real.renameSync),
    ftruncateSync: jest.fn(real.ftruncateSync),
  };
});
const mocked = {
  writeSync: fs.writeSync as unknown as jest.Mock,
  fsyncSync: fs.fsyncSync as unknown as jest.Mock,
  fdatasyncSync: fs.fdatasyncSync as unknown as jest.Mock,
  renameSync: fs.renameSync as unknown as jest.Mock,
  ftruncateSync: fs.ftruncateSync as unknown as jest.Mock,
};
const realFtruncate = jest.requireActual<typeof import('node:fs')>('node:fs').ftruncateSync;

const POOL = 'underlay/10.0.0.0/16';
const POOL6 = 'underlay/2001:db8::/64';
const addr = (i: number) => `10.0.${i >> 8}.${i & 255}`;
const held = (n: number): AllocInfo[] => Array.from({ length: n }, (_, i) => ({ poolId: POOL, address: addr(i), seq: i + 1 }));

let dir: string;
let stores: LocalStore[];
/** A store on the directory, closed after the test. */
const open = (now?: () => Date) => {
  const s = new LocalStore(dir, now);
  stores.push(s);
  return s;
};
const snapshot = () => path.join(dir, 'allocations.json');
const journal = () => path.join(dir, 'allocations.log');
const lines = () => fs.readFileSync(journal(), 'utf8').split('\n').filter(Boolean);
const mapOf = (s: LocalStore) => Object.fromEntries([...s.allocs].sort(([a], [b]) => a.localeCompare(b)));
/** What a reload shows: the map, and that nothing was damaged or repaired. */
const reloaded = () => {
  const s = open();
  expect(s.damaged).toEqual([]);
  return s;
};

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-store-journal-'));
  stores = [];
  for (const m of Object.values(mocked)) m.mockClear();
});
afterEach(() => {
  mocked.ftruncateSync.mockImplementation(realFtruncate);
  for (const s of stores) s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('allocations journal', () => {
  it('keeps a sequence of sets and deletes across a reload, one JSON line each', () => {
    const s = open();
    expect(s.allocationsMissing).toBe(true);
    s.addAllocs(held(3));
    s.setAlloc(POOL, addr(3), 40); // new
    s.setAlloc(POOL, addr(0), 41); // allocated again: another seq
    s.setAlloc(POOL, addr(1), undefined); // released
    s.setAlloc(POOL6, '2001:db8::5', 42); // the same store, another pool
    s.setAlloc(POOL, addr(3), undefined);
    s.setAlloc(POOL, addr(3), 43); // released, then allocated again
    s.setAlloc(POOL, addr(9), undefined); // nothing to release: nothing written
    expect(lines().map((l) => JSON.parse(l))).toEqual([
      { op: 'set', poolId: POOL, address: addr(3), seq: 40 },
      { op: 'set', poolId: POOL, address: addr(0), seq: 41 },
      { op: 'del', poolId: POOL, address: addr(1), seq: 2 },
      { op: 'set', poolId: POOL6, address: '2001:db8::5', seq: 42 },
      { op: 'del', poolId: POOL, address: addr(3), seq: 40 },
      { op: 'set', poolId: POOL, address: addr(3), seq: 43 },
    ]);
    const want = { [`${POOL}|${addr(0)}`]: { seq: 41 }, [`${POOL}|${addr(2)}`]: { seq: 3 }, [`${POOL}|${addr(3)}`]: { seq: 43 }, [`${POOL6}|2001:db8::5`]: { seq: 42 } };
    expect(mapOf(s)).toEqual(want);
    const again = reloaded();
    expect(mapOf(again)).toEqual(want);
    expect(again.allocationsMissing).toBe(false);
    expect(again.repaired).toEqual([]);
    // The journal is private, and a closed store opens it again for its next change.
    expect(fs.statSync(journal()).mode & 0o777).toBe(0o600);
    s.close();
    s.setAlloc(POOL, addr(2), undefined);
    expect(reloaded().allocSeq(POOL, addr(2))).toBeUndefined();
  });

  it('appends one line with one write and an fdatasync per change, and does not rewrite the snapshot', () => {
    const s = open();
    s.addAllocs(held(1000));
    const before = fs.statSync(snapshot());
    const text = fs.readFileSync(snapshot(), 'utf8');
    for (const m of Object.values(mocked)) m.mockClear();
    s.setAlloc(POOL, addr(1000), 5000);
    // The journal's first line: the new file's directory entry is made durable too.
    expect(mocked.writeSync).toHaveBeenCalledTimes(1);
    expect(mocked.fdatasyncSync).toHaveBeenCalledTimes(1);
    expect(mocked.fsyncSync).toHaveBeenCalledTimes(1);
    for (let i = 1; i < 200; i++) s.setAlloc(POOL, addr(1000 + (i >> 1)), i % 2 === 0 ? 5000 + i : undefined);
    expect(mocked.writeSync).toHaveBeenCalledTimes(200);
    expect(mocked.fdatasyncSync).toHaveBeenCalledTimes(200);
    expect(mocked.fsyncSync).toHaveBeenCalledTimes(1);
    expect(mocked.renameSync).not.toHaveBeenCalled();
    const after = fs.statSync(snapshot());
    expect({ ino: after.ino, mtimeMs: after.mtimeMs, size: after.size }).toEqual({ ino: before.ino, mtimeMs: before.mtimeMs, size: before.size });
    expect(fs.readFileSync(snapshot(), 'utf8')).toBe(text);
    expect(lines()).toHaveLength(200);
    expect(mapOf(reloaded())).toEqual(mapOf(s));
  });

  it('drops a last line a crash cut, and cuts it off the file so the next line does not follow it', () => {
    const s = open();
    s.setAlloc(POOL, addr(1), 11);
    s.setAlloc(POOL, addr(2), 12);
    s.close();
    const good = fs.statSync(journal()).size;
    const cut = '{"op":"set","poolId":"underlay/10.0.0.0/16","addr'; // no line end
    fs.appendFileSync(journal(), cut);
    const again = reloaded();
    expect(mapOf(again)).toEqual({ [`${POOL}|${addr(1)}`]: { seq: 11 }, [`${POOL}|${addr(2)}`]: { seq: 12 } });
    expect(again.repaired).toEqual([`${journal()}: its last line (${cut.length} bytes) was cut by a crash while it was written: dropped (its change had not completed)`]);
    expect(fs.statSync(journal()).size).toBe(good);
    again.setAlloc(POOL, addr(3), 13);
    const third = reloaded();
    expect(third.repaired).toEqual([]);
    expect(third.allocSeq(POOL, addr(3))).toBe(13);

    // A whole last line that is not JSON (blocks written out of order: zeros where the line was) is cut too.
    third.close();
    again.close();
    const good2 = fs.statSync(journal()).size;
    fs.appendFileSync(journal(), `${'\0'.repeat(20)}\n`);
    const fourth = reloaded();
    expect(fourth.repaired).toHaveLength(1);
    expect(fourth.allocSeq(POOL, addr(3))).toBe(13);
    expect(fs.statSync(journal()).size).toBe(good2);
  });

  it('moves the journal and its snapshot aside when a line before the last is damaged: the allocations are rebuilt', () => {
    const s = open(() => new Date('2026-01-02T03:04:05.678Z'));
    s.addAllocs(held(2));
    s.setAlloc(POOL, addr(2), 13);
    s.setAlloc(POOL, addr(3), 14);
    s.close();
    const [first, second] = lines();
    fs.writeFileSync(journal(), `${first}\n{"op":"set","poolId":"underlay/10.0.0.0/16","address":"10.0.0.3"}\n${second}\n`);
    const again = open(() => new Date('2026-01-02T03:04:05.678Z'));
    expect(again.damaged.map((d) => [path.basename(d.file), d.reason])).toEqual([
      ['allocations.log', 'line 2 does not match its schema: seq: Invalid input: expected number, received undefined'],
      ['allocations.json', `is out of date without its journal ${journal()}, which was damaged`],
    ]);
    expect(again.damaged.map((d) => d.movedTo && path.basename(d.movedTo))).toEqual(['allocations.log.corrupt-2026-01-02T03-04-05-678Z', 'allocations.json.corrupt-2026-01-02T03-04-05-678Z']);
    expect(again.allocs.size).toBe(0);
    expect(again.allocationsMissing).toBe(true);
    // Not JSON in the middle: the same. The rebuild writes a new snapshot; the next start finds nothing damaged.
    again.addAllocs(held(4));
    again.setAlloc(POOL, addr(4), 15);
    again.setAlloc(POOL, addr(5), 16);
    again.close();
    const [a, b] = lines();
    fs.writeFileSync(journal(), `${a}\n{"op":"se\n${b}\n`);
    const third = open();
    expect(third.damaged.map((d) => [path.basename(d.file), d.reason.replace(/: .*/, '')])).toEqual([
      ['allocations.log', 'line 2 is not valid JSON'],
      ['allocations.json', `is out of date without its journal ${journal()}, which was damaged`.replace(/: .*/, '')],
    ]);
    third.addAllocs(held(4));
    expect(mapOf(reloaded())).toEqual(mapOf(third));
  });

  it('moves the journal aside with a damaged snapshot (it holds changes to it)', () => {
    const s = open();
    s.addAllocs(held(2));
    s.setAlloc(POOL, addr(2), 13);
    s.close();
    fs.writeFileSync(snapshot(), '{"underlay/10.0.0.0/16|10.0.0.0": {"se');
    const again = open();
    expect(again.damaged.map((d) => [path.basename(d.file), d.reason.replace(/: .*/, '')])).toEqual([
      ['allocations.json', 'is not valid JSON'],
      ['allocations.log', `holds changes to ${snapshot()}, which was damaged`],
    ]);
    expect(again.allocs.size).toBe(0);
    expect(again.allocationsMissing).toBe(true);
    expect(fs.existsSync(journal())).toBe(false);
  });

  it(`compacts past ${COMPACT_MIN_LINES} lines (and twice the allocations): a new snapshot, then the journal emptied; a crash between the two reloads to the same map`, () => {
    const s = open();
    s.addAllocs(held(17)); // the journal's keys (10 to 16) held already, so no change below is a no-op
    // A crash right after the new snapshot: what the journal held at its cut is kept to put back.
    let atCut: Buffer | undefined;
    mocked.ftruncateSync.mockImplementation((fd: number, len?: number) => {
      if (len === 0 && atCut === undefined) atCut = fs.readFileSync(journal());
      realFtruncate(fd, len);
    });
    const change = (i: number) => s.setAlloc(POOL, addr(10 + (i % 7)), i % 3 === 2 ? undefined : 100 + i);
    const snapshotText = fs.readFileSync(snapshot(), 'utf8');
    for (let i = 0; i < COMPACT_MIN_LINES; i++) change(i);
    expect(lines()).toHaveLength(COMPACT_MIN_LINES);
    expect(fs.readFileSync(snapshot(), 'utf8')).toBe(snapshotText);
    expect(atCut).toBeUndefined();
    change(COMPACT_MIN_LINES);
    const compacted = mapOf(s);
    expect(fs.statSync(journal()).size).toBe(0);
    expect(JSON.parse(fs.readFileSync(snapshot(), 'utf8'))).toEqual(compacted);
    expect(atCut!.toString('utf8').split('\n').filter(Boolean)).toHaveLength(COMPACT_MIN_LINES + 1);
    expect(mapOf(reloaded())).toEqual(compacted);
    // After it, changes go to the emptied journal.
    change(COMPACT_MIN_LINES + 1);
    expect(lines()).toHaveLength(1);
    expect(mapOf(s)).not.toEqual(compacted);
    s.close();

    // The crash: the new snapshot, and the journal as it was at its cut (the change after it never happened).
    fs.writeFileSync(journal(), atCut!);
    expect(mapOf(reloaded())).toEqual(compacted);
  });

  it('compacts at twice the allocations when that is more than the minimum', () => {
    const s = open();
    s.addAllocs(held(300));
    const mtime = fs.statSync(snapshot()).mtimeMs;
    // Alternately a new address and its release: 300 or 301 allocations, the bound 600 or 602 lines.
    const change = (i: number) => s.setAlloc(POOL, addr(300 + (i >> 1)), i % 2 === 0 ? 1000 + i : undefined);
    for (let i = 0; i < 600; i++) change(i);
    expect(lines()).toHaveLength(600);
    expect(fs.statSync(snapshot()).mtimeMs).toBe(mtime);
    for (let i = 600; i < 610; i++) change(i);
    expect(lines().length).toBeLessThan(10);
    expect(Object.keys(JSON.parse(fs.readFileSync(snapshot(), 'utf8'))).length).toBeGreaterThanOrEqual(300);
    expect(mapOf(reloaded())).toEqual(mapOf(s));
  });

  it("loads an older agent's state directory (the snapshot alone) and journals its changes next to it", () => {
    const old = { [`${POOL}|${addr(1)}`]: { seq: 7 }, [`${POOL6}|2001:db8::2`]: { seq: 8 } };
    fs.writeFileSync(snapshot(), JSON.stringify(old, null, 2), { mode: 0o600 });
    const s = open();
    expect(s.damaged).toEqual([]);
    expect(s.allocationsMissing).toBe(false);
    expect(mapOf(s)).toEqual(old);
    s.setAlloc(POOL, addr(1), undefined);
    s.setAlloc(POOL, addr(2), 9);
    expect(JSON.parse(fs.readFileSync(snapshot(), 'utf8'))).toEqual(old);
    expect(mapOf(reloaded())).toEqual({ [`${POOL}|${addr(2)}`]: { seq: 9 }, [`${POOL6}|2001:db8::2`]: { seq: 8 } });
  });

  it('says the allocations were missing only when neither file held any', () => {
    expect(open().allocationsMissing).toBe(true);
    open().setAlloc(POOL, addr(1), 1); // a journal without a snapshot yet
    expect(open().allocationsMissing).toBe(false);
    fs.rmSync(journal());
    fs.writeFileSync(journal(), '');
    expect(open().allocationsMissing).toBe(true);
  });
});
