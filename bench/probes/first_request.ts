/**
 * Cold-start probe: times the steps of a fresh process between loading the
 * modules and the program's first reply. They are reading the configuration,
 * opening the database connection (TCP and SCRAM login) with a trivial
 * query, detecting the schema, and the first account lookup.
 *
 * Usage: first_request.ts CONFIG USERNAME
 *
 * @module
 */

import { findAccount } from "../../lib/accounts.ts";
import { loadConfig } from "../../lib/config.ts";
import { Database } from "../../lib/database.ts";
import { detectSchema } from "../../lib/schema.ts";
import { writeJson } from "./output.ts";

/** Time each step may take before the database layer gives up. */
const STEP_TIMEOUT_MS = 10_000;

const [configPath, username] = Deno.args;
const startedAt = performance.now();
const config = await loadConfig(configPath);
const configLoadedAt = performance.now();

const database = new Database(config.database, { applicationName: "auth-mastodon-bench" });
await database.query("SELECT 1", [], { deadline: performance.now() + STEP_TIMEOUT_MS });
const connectedAt = performance.now();

const features = await detectSchema(database, {
  deadline: performance.now() + STEP_TIMEOUT_MS,
  accessTokens: config.auth.accessTokens,
});
const schemaDetectedAt = performance.now();

const row = await findAccount(database, username, features, {
  deadline: performance.now() + STEP_TIMEOUT_MS,
  withPassword: false,
});
const lookedUpAt = performance.now();
await database.close();
if (row === undefined) throw new Error(`account ${username} not found`);

await writeJson({
  configMs: configLoadedAt - startedAt,
  connectMs: connectedAt - configLoadedAt,
  schemaMs: schemaDetectedAt - connectedAt,
  lookupMs: lookedUpAt - schemaDetectedAt,
});
