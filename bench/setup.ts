/**
 * The benchmark's database: the test schema and accounts of Mastodon main,
 * plus generated local accounts that all share one cost-10 bcrypt hash, and
 * one access token.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { fixture } from "../tests/support/hashes.ts";
import { createMastodonDatabase, writeConfig } from "../tests/support/mastodon.ts";
import type { TestCluster } from "../tests/support/postgres.ts";

/** Generated accounts, on top of the test accounts of tests/support/mastodon.ts. */
export const GENERATED_ACCOUNTS = 20_000;

/** First id of the generated accounts and users, above every test account's id. */
const FIRST_GENERATED_ID = 100_000;

/** The hash fixture that every generated user's `encrypted_password` is. */
export const HASH_FIXTURE = "ascii";

/** Username of the generated account `index` (1 to {@linkcode GENERATED_ACCOUNTS}). */
export function generatedUsername(index: number): string {
  return `bench${String(index).padStart(5, "0")}`;
}

/** Name, size and access token of the benchmark's database. */
export interface BenchDatabase {
  name: string;
  /** Local accounts with a login: generated ones plus the test accounts. */
  accountCount: number;
  /** Generated account whose access token is {@linkcode BenchDatabase.token}. */
  tokenUser: string;
  /** A random access token of 43 URL-safe base64 characters, never printed. */
  token: string;
}

/**
 * Creates database `name` with the Mastodon main schema, the test accounts
 * and the read-only role, adds the generated accounts and one access token,
 * and runs ANALYZE so that the planner uses the real table sizes.
 */
export async function createBenchDatabase(
  cluster: TestCluster,
  name: string,
): Promise<BenchDatabase> {
  await createMastodonDatabase(cluster, name, "main");

  const hash = fixture(HASH_FIXTURE).hash;
  const token = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
  const tokenIndex = Math.ceil(GENERATED_ACCOUNTS / 2);
  const first = FIRST_GENERATED_ID;
  await cluster.sql(
    `INSERT INTO accounts (id, username, actor_type)
       SELECT ${first} + n, 'bench' || lpad(n::text, 5, '0'), 'Person'
       FROM generate_series(1, ${GENERATED_ACCOUNTS}) AS n;
     INSERT INTO users (id, email, encrypted_password, confirmed_at, account_id)
       SELECT ${first} + n, 'bench' || n || '@mail.example', '${hash}',
              now() AT TIME ZONE 'UTC', ${first} + n
       FROM generate_series(1, ${GENERATED_ACCOUNTS}) AS n;
     INSERT INTO oauth_access_tokens (token, resource_owner_id, application_id, scopes, created_at)
       VALUES ('${token}', ${first + tokenIndex}, 1, 'read', now() AT TIME ZONE 'UTC');
     ANALYZE;`,
    name,
  );

  const count = await cluster.sql(
    `SELECT count(*) FROM accounts a JOIN users u ON u.account_id = a.id WHERE a.domain IS NULL`,
    name,
  );
  return {
    name,
    accountCount: Number.parseInt(count.trim(), 10),
    tokenUser: generatedUsername(tokenIndex),
    token,
  };
}

/**
 * Writes the program's configuration into `folder`: the read-only role over
 * TCP on 127.0.0.1, `[log] level = warn`, and default cache settings.
 */
export function writeBenchConfig(
  folder: string,
  cluster: TestCluster,
  database: string,
): Promise<string> {
  return writeConfig(folder, cluster, database, { log: "level = warn" });
}
