import { PAGE_MAX, comparePageKeys, decodeContinue, encodeContinue, pageOf, type PageKey } from '@underlay/core';

describe('paging', () => {
  const rows: PageKey[] = Array.from({ length: 25 }, (_, i) => ['net', BigInt(i * 3)]);

  it('round-trips keys with strings and big numbers through the token', () => {
    const k: PageKey = ['a:b', 18446744073709551615n, ''];
    expect(decodeContinue(encodeContinue(k))).toEqual(k);
  });

  it('reads every row exactly once, page after page, and stops with no token', () => {
    const seen: PageKey[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const p = pageOf(rows, (r) => r, { limit: 10, continue: token });
      seen.push(...p.items);
      token = p.continue;
      pages++;
    } while (token && pages < 10);
    expect(pages).toBe(3);
    expect(seen).toEqual(rows);
  });

  it('starts after the last row seen even when rows were added before it', () => {
    const first = pageOf(rows, (r) => r, { limit: 5 });
    const grown = [['net', -1n] as PageKey, ...rows];
    expect(pageOf(grown, (r) => r, { limit: 2, continue: first.continue }).items).toEqual([rows[5], rows[6]]);
  });

  it('orders numbers by value and refuses tokens it did not make', () => {
    expect(comparePageKeys(['x', 9n], ['x', 10n])).toBeLessThan(0);
    expect(() => decodeContinue('not a token!')).toThrow(/continue: not a token/);
    expect(() => decodeContinue(Buffer.from('{"a":1}').toString('base64url'))).toThrow(/continue/);
    expect(pageOf(rows, (r) => r, { limit: PAGE_MAX * 2 }).items).toHaveLength(25);
  });
});
