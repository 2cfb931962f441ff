/**
 * What the controller's spans go through between its thread and the export thread, for tests: written as they end
 * (SpanWriter), the buffer transferred as postMessage does, read back into rows (readSpanWire).
 */
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { SpanWriter, plainResources, readSpanWire } from '../../libs/adapters/src/telemetry/span-wire';
import type { SpanBatch } from '../../libs/adapters/src/telemetry/span-batch';

export async function wireTrip(spans: readonly ReadableSpan[], writer = new SpanWriter(64)): Promise<SpanBatch> {
  for (const s of spans) writer.write(s);
  const { wire, resources } = writer.take();
  const sent = structuredClone({ ...wire, resources: await plainResources(resources) }, { transfer: [wire.buffer] });
  expect(wire.buffer.byteLength).toBe(0); // transferred, not copied
  const batch = readSpanWire(sent);
  // As the thread does once it has read a batch: the buffer goes back to the writer for a later batch.
  writer.recycle(sent.buffer);
  return batch;
}
