/**
 * Pipe round-trip probe: replies true to every complete request frame on
 * stdin and looks nothing up, so the time to its reply is the cost of the
 * pipes, the event loop and the benchmark's client.
 *
 * @module
 */

const reply = Uint8Array.of(0, 2, 0, 1);
const buffer = new Uint8Array(64 * 1024);
let pending = new Uint8Array(0);

while (true) {
  const count = await Deno.stdin.read(buffer);
  if (count === null) break;
  const joined = new Uint8Array(pending.length + count);
  joined.set(pending);
  joined.set(buffer.subarray(0, count), pending.length);
  pending = joined;
  while (pending.length >= 2 && pending.length >= 2 + ((pending[0] << 8) | pending[1])) {
    pending = pending.slice(2 + ((pending[0] << 8) | pending[1]));
    await Deno.stdout.write(reply);
  }
}
