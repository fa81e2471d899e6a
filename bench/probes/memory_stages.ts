/**
 * Memory probe: loads what the program loads, one stage at a time, to show
 * where its RSS comes from. After each stage it writes one JSON line with
 * the stage's name and V8's heap counters, then waits for a line on stdin,
 * while the benchmark reads its /proc/PID/status. Each stage adds to the
 * previous ones; the first is a script that has imported only its output
 * helper.
 *
 * Usage: memory_stages.ts CONFIG
 *
 * @module
 */

import { writeJson } from "./output.ts";

const STEP_TIMEOUT_MS = 10_000;
const lineBuffer = new Uint8Array(64);

/** Reports the stage and waits until the benchmark has read this process's memory. */
async function reached(stage: string): Promise<void> {
  const usage = Deno.memoryUsage();
  await writeJson({
    stage,
    heapUsedBytes: usage.heapUsed,
    heapTotalBytes: usage.heapTotal,
    externalBytes: usage.external,
  });
  // A direct read leaves no read pending after the last stage, so the probe can exit.
  if (await Deno.stdin.read(lineBuffer) === null) {
    throw new Error("stdin closed before the benchmark read the memory");
  }
}

await reached("empty script");

await import("postgres");
await reached("after importing postgres.js");

const { bcryptVerify } = await import("hash-wasm");
await reached("after importing hash-wasm");

await import("../../main.ts");
await reached("after importing main.ts (all of lib/)");

const { fixture } = await import("../../tests/support/hashes.ts");
const { password, hash } = fixture("ascii");
if (!await bcryptVerify({ password, hash })) throw new Error("the fixture hash did not verify");
await reached("after the first bcrypt verification");

const { loadConfig } = await import("../../lib/config.ts");
const { Database } = await import("../../lib/database.ts");
const config = await loadConfig(Deno.args[0]);
const database = new Database(config.database, { applicationName: "auth-mastodon-bench" });
await database.query("SELECT 1", [], { deadline: performance.now() + STEP_TIMEOUT_MS });
await reached("after connecting to PostgreSQL");
await database.close();
