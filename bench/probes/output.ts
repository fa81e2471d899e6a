/**
 * Writes a probe's result as JSON on stdout, which the benchmark parses.
 * Probes print nothing else there.
 *
 * @module
 */

/** Writes `value` as one line of JSON to stdout, looping until every byte is written. */
export async function writeJson(value: unknown): Promise<void> {
  const bytes = new TextEncoder().encode(`${JSON.stringify(value)}\n`);
  let offset = 0;
  while (offset < bytes.length) offset += await Deno.stdout.write(bytes.subarray(offset));
}
