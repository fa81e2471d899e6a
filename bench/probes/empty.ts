/**
 * Cold-start probe: replies true at once, so the time to its reply is Deno's
 * own start-up with the start task's flags.
 *
 * @module
 */

await Deno.stdout.write(Uint8Array.of(0, 2, 0, 1));
