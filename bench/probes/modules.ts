/**
 * Cold-start probe: loads and evaluates the program's whole module graph,
 * npm packages included, then replies true. Imported, main.ts does not serve,
 * because it calls `main` only when it is the main module.
 *
 * @module
 */

import "../../main.ts";

await Deno.stdout.write(Uint8Array.of(0, 2, 0, 1));
