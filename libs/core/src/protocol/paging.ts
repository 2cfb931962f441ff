/**
 * Paging of the API's lists that grow with the cluster (endpoints, a network's endpoints, IPAM blocks): a page holds at
 * most `limit` rows after the `continue` token of the previous page; an answer with more rows behind it carries the
 * token of its last row. The token is the sort key of that row, not an offset, so rows added or removed between two
 * requests shift nothing: the next page starts right after the last row seen (a row added before it is not seen; one
 * added after it is). Opaque to clients: base64url of a JSON array of `s:` strings and `n:` whole numbers.
 */
import { z } from 'zod';
import { InvalidArgumentError } from '../errors.js';

/** Rows per page when the request names no limit: a small cluster's lists fit one page, as before paging. */
export const PAGE_DEFAULT = 1_000;
/** The most rows one page may hold. */
export const PAGE_MAX = 10_000;
/** The longest token accepted (characters). */
export const CONTINUE_MAX = 2_048;

/** A row's position in its list: compared element by element (strings by code unit, numbers by value). */
export type PageKey = readonly (string | bigint)[];

const Encoded = z.array(z.string().regex(/^(s:[\s\S]*|n:-?\d{1,80})$/)).min(1).max(8);

/** The token of a row's key. */
export function encodeContinue(key: PageKey): string {
  return Buffer.from(JSON.stringify(key.map((k) => (typeof k === 'bigint' ? `n:${k}` : `s:${k}`))), 'utf8').toString('base64url');
}

const NOT_A_TOKEN = 'not a token this API made (pass the `continue` of the previous page unchanged)';

/** The key a token holds; an InvalidArgumentError (`continue: ...`) for anything this API did not make. */
export function decodeContinue(token: string): PageKey {
  const bad = () => new InvalidArgumentError(`continue: ${NOT_A_TOKEN}`);
  if (token.length > CONTINUE_MAX || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  const r = Encoded.safeParse(parsed);
  if (!r.success) throw bad();
  return r.data.map((e) => (e.startsWith('n:') ? BigInt(e.slice(2)) : e.slice(2)));
}

/** Orders two keys (a shorter key that is a prefix of a longer one comes first; a number before a string). */
export function comparePageKeys(a: PageKey, b: PageKey): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (typeof x !== typeof y) return typeof x === 'bigint' ? -1 : 1;
    if (x < y) return -1;
    if (x > y) return 1;
  }
  return a.length - b.length;
}

/** Page size and position, as the API's queries give them. */
export interface PageRequest {
  limit?: number;
  continue?: string;
}

/**
 * One page of `rows`, which must be sorted by `keyOf` (comparePageKeys): at most `limit` rows whose key comes after
 * the token's, and the token of the last one when rows remain after it.
 */
export function pageOf<T>(rows: readonly T[], keyOf: (row: T) => PageKey, req: PageRequest = {}): { items: T[]; continue?: string } {
  const limit = Math.min(Math.max(1, req.limit ?? PAGE_DEFAULT), PAGE_MAX);
  let start = 0;
  if (req.continue !== undefined) {
    const after = decodeContinue(req.continue);
    // The first row after the token's key (binary search: the rows are in key order).
    let lo = 0;
    let hi = rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (comparePageKeys(keyOf(rows[mid]!), after) <= 0) lo = mid + 1;
      else hi = mid;
    }
    start = lo;
  }
  const items = rows.slice(start, start + limit);
  const more = start + limit < rows.length;
  return more ? { items, continue: encodeContinue(keyOf(items[items.length - 1]!)) } : { items };
}

/** What a page size must be (the API's `limit`, the CLI's --page-size). */
export const PAGE_LIMIT_RULE = `must be a whole number from 1 to ${PAGE_MAX}`;

/** A page size as text (a URL's `limit`, the CLI's --page-size) → rows per page. */
export const PageLimit = z
  .string()
  .regex(/^\d+$/, PAGE_LIMIT_RULE)
  .transform(Number)
  .pipe(z.number().int().min(1, PAGE_LIMIT_RULE).max(PAGE_MAX, PAGE_LIMIT_RULE));

/** `limit` and `continue` of a paged list's query (strings, as they come in a URL). */
export const PageQuery = z.object({
  limit: PageLimit.optional()
    .describe(`rows per page (1-${PAGE_MAX}, ${PAGE_DEFAULT} by default); an answer with more rows behind it carries \`continue\``),
  continue: z
    .string()
    .min(1)
    .max(CONTINUE_MAX)
    .refine(
      (t) => {
        try {
          decodeContinue(t);
          return true;
        } catch {
          return false;
        }
      },
      { message: NOT_A_TOKEN },
    )
    .optional()
    .describe('the `continue` of the previous page, unchanged: this page starts after its last row'),
});
export type PageQuery = z.infer<typeof PageQuery>;
