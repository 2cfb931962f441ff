/** `buf` with room for `need` more bytes after its first `used`: `buf` itself, or a copy of doubled size. */
export function withRoom(buf: Uint8Array, used: number, need: number): Uint8Array {
  if (used + need <= buf.length) return buf;
  let size = buf.length * 2;
  while (size < used + need) size *= 2;
  const next = new Uint8Array(size);
  next.set(buf.subarray(0, used));
  return next;
}
