/**
 * Runs the inputs of every suite through the program at debug level, with a
 * log file and stderr, including database failures, and then searches all of
 * that output for every secret the tests use: passwords, tokens and the
 * database passwords. None may appear.
 */

import assert from "node:assert/strict";
import { COMMON_CASES } from "./support/cases.ts";
import { fixture, fixtureNames } from "./support/hashes.ts";
import {
  allSecrets,
  createMastodonDatabase,
  PASSWORD,
  READER_PASSWORD,
  TOKENS,
  writeConfig,
} from "./support/mastodon.ts";
import { TestCluster } from "./support/postgres.ts";
import { concat, Program } from "./support/program.ts";

const cluster = await TestCluster.start({ ssl: true });
await createMastodonDatabase(cluster, "mastodon", "main");
const folder = await Deno.makeTempDir({ dir: "/tmp" });
const WRONG_DATABASE_PASSWORD = "wrong-db-Password-9f3e";

Deno.test.afterAll(async () => {
  await cluster.destroy();
  await Deno.remove(folder, { recursive: true });
});

const encoder = new TextEncoder();

/** Returns every request the other suites send, plus secrets in odd places. */
function corpus(): Uint8Array[] {
  const requests: Uint8Array[] = COMMON_CASES.map(([request]) => encoder.encode(request));
  const users = ["alice", "totp", "nobody", "suspended", "binary", "external", "moved"];
  for (const name of fixtureNames()) {
    const { password } = fixture(name);
    for (const user of users) {
      requests.push(concat(encoder.encode(`auth:${user}:example.org:`), password));
      requests.push(concat(encoder.encode(`auth:${user}:other.example:`), password));
      requests.push(concat(encoder.encode(`setpass:${user}:example.org:`), password));
      requests.push(concat(encoder.encode(`tryregister:${user}:example.org:`), password));
      requests.push(concat(encoder.encode(`removeuser3:${user}:example.org:`), password));
    }
    // A client that lost the framing: the secret is where the command would be.
    requests.push(password);
    requests.push(concat(password, encoder.encode(":alice:example.org:x")));
  }
  for (const token of Object.values(TOKENS)) {
    for (const user of users) requests.push(encoder.encode(`auth:${user}:example.org:${token}`));
    requests.push(encoder.encode(token));
  }
  requests.push(encoder.encode(`auth:alice:example.org:${READER_PASSWORD}`));
  requests.push(encoder.encode(`auth:alice:example.org:${WRONG_DATABASE_PASSWORD}`));
  requests.push(encoder.encode(`auth:alice:example.org:${PASSWORD}\u0000`));
  return requests;
}

async function runCorpus(configPath: string, logFile: string): Promise<string> {
  await using program = await Program.start({ args: ["-c", configPath], logFile });
  for (const request of corpus()) await program.request(request);
  program.kill("SIGHUP");
  await new Promise((resolve) => setTimeout(resolve, 300));
  // A reload writes its own lines, which are searched as well.
  await program.request("isuser:alice:example.org");
  const { stderr } = await program.finish();
  return stderr + (await Deno.readTextFile(logFile));
}

function assertNoSecret(output: string, secrets: string[]): void {
  for (const secret of secrets) {
    assert.ok(
      !output.includes(secret),
      `a secret of ${secret.length} characters appears in the output`,
    );
  }
}

Deno.test("no secret reaches the log with a working database", async () => {
  const logFile = `${folder}/working.log`;
  const config = await writeConfig(folder, cluster, "mastodon", {
    file: "working.ini",
    database: "sslmode = require",
    log: `level = debug\nfile = ${logFile}`,
  });
  const output = await runCorpus(config, logFile);
  // The corpus was decided, so the output is the real thing to search.
  assert.match(output, /accepted auth alice@example\.org method=password reason=ok/);
  assert.match(output, /accepted auth totp@example\.org method=token reason=ok/);
  assert.match(output, /rejected - - reason=malformed-request/);
  assertNoSecret(output, [...allSecrets(), WRONG_DATABASE_PASSWORD]);
});

Deno.test("no secret reaches the log when the database rejects the login", async () => {
  const logFile = `${folder}/failing.log`;
  const config = await writeConfig(folder, cluster, "mastodon", {
    file: "failing.ini",
    log: `level = debug\nfile = ${logFile}`,
  });
  const text = await Deno.readTextFile(config);
  await Deno.writeTextFile(
    config,
    text.replace(`password = ${READER_PASSWORD}`, `password = ${WRONG_DATABASE_PASSWORD}`),
  );
  const output = await runCorpus(config, logFile);
  assert.match(output, /password authentication failed for user "auth_mastodon"/);
  assertNoSecret(output, [...allSecrets(), WRONG_DATABASE_PASSWORD]);
});

Deno.test("no secret reaches the log from an invalid config", async () => {
  const logFile = `${folder}/invalid.log`;
  const config = `${folder}/invalid.ini`;
  await Deno.writeTextFile(
    config,
    `[database]\npassword = ${WRONG_DATABASE_PASSWORD}\npassword_file = /nonexistent\n[log]\nfile = ${logFile}\nlevel = debug\n`,
  );
  const output = await runCorpus(config, logFile);
  assert.match(output, /keys "database\.password" and "database\.password_file" are both set/);
  assertNoSecret(output, [...allSecrets(), WRONG_DATABASE_PASSWORD]);
});
