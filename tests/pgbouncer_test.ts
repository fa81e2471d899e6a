/**
 * The program behind a real PgBouncer in transaction pooling mode, as the README section
 * "Replicas and PgBouncer" describes. Debian 12 has PgBouncer 1.18, which cannot keep
 * prepared statements in this mode, so the README tells admins to set `prepared_statements = no`
 * there. The second test shows what happens with `yes`.
 *
 * Several programs run at once, as ejabberd starts several, and share a pool of several
 * server connections that PgBouncer hands out in turn. The server connections are then
 * replaced twice: by RECONNECT on PgBouncer's admin console and by pg_terminate_backend on
 * the server.
 */

import assert from "node:assert/strict";
import { COMMON_CASES } from "./support/cases.ts";
import { createMastodonDatabase, READER_PASSWORD, READER_ROLE } from "./support/mastodon.ts";
import { pgbouncerInstalled, TestPgBouncer } from "./support/pgbouncer.ts";
import { TestCluster } from "./support/postgres.ts";
import { Program } from "./support/program.ts";

const INSTALL_HINT = "apt-get install -y pgbouncer";
const available = pgbouncerInstalled();
const required = Deno.env.get("CI") === "true";

const DATABASE = "mastodon";

/** Programs running at once, as ejabberd runs extauth_pool_size of them. */
const PROGRAM_COUNT = 3;

/** Server connections in PgBouncer's pool. */
const POOL_SIZE = 3;

if (!available && required) {
  Deno.test("pgbouncer is installed in CI", () => {
    assert.fail(`CI=true but pgbouncer or psql is missing: ${INSTALL_HINT}`);
  });
}

/** Registers a test that is skipped with the install hint when PgBouncer is missing. */
function pgbouncerTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: available
      ? name
      : `${name} (skipped: pgbouncer or psql is not installed; ${INSTALL_HINT})`,
    ignore: !available,
    fn,
  });
}

/** A cluster with the Mastodon schema, PgBouncer in front of it, and programs behind that. */
interface PooledSetup {
  cluster: TestCluster;
  bouncer: TestPgBouncer;
  programs: Program[];
}

/**
 * Starts the cluster, PgBouncer in transaction mode with a full pool handed out in turn, and
 * PROGRAM_COUNT programs connected to PgBouncer. Runs `body`, then stops everything.
 */
async function withPooledPrograms(
  preparedStatements: boolean,
  body: (setup: PooledSetup) => Promise<void>,
): Promise<void> {
  await using cluster = await TestCluster.start();
  await createMastodonDatabase(cluster, DATABASE, "main");
  await using bouncer = await TestPgBouncer.start(cluster, {
    database: DATABASE,
    user: READER_ROLE,
    password: READER_PASSWORD,
    poolMode: "transaction",
    poolSize: POOL_SIZE,
    // Under load from other clients, one client's consecutive transactions land on different
    // server connections. Round robin makes that happen with the few clients of a test.
    serverRoundRobin: true,
  });
  await fillPool(bouncer);

  const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: "auth-mastodon-pgbouncer-test-" });
  const programs: Program[] = [];
  try {
    const config = await writeProgramConfig(folder, bouncer, preparedStatements);
    for (let index = 0; index < PROGRAM_COUNT; index++) {
      programs.push(await Program.start({ args: ["-c", config] }));
    }
    await body({ cluster, bouncer, programs });
  } finally {
    for (const program of programs) await program[Symbol.asyncDispose]();
    await Deno.remove(folder, { recursive: true });
  }
}

async function writeProgramConfig(
  folder: string,
  bouncer: TestPgBouncer,
  preparedStatements: boolean,
): Promise<string> {
  const path = `${folder}/auth-mastodon-prepared-${preparedStatements ? "yes" : "no"}.ini`;
  await Deno.writeTextFile(
    path,
    `[database]
host = ${bouncer.hostname}
port = ${bouncer.port}
name = ${DATABASE}
user = ${READER_ROLE}
password = ${READER_PASSWORD}
query_timeout = 5
prepared_statements = ${preparedStatements ? "yes" : "no"}

[xmpp]
domains = example.org, chat.example.org

[log]
level = info
`,
    { mode: 0o600 },
  );
  return path;
}

/**
 * Opens POOL_SIZE server connections by running as many overlapping transactions through
 * PgBouncer, and checks that the pool has that many.
 */
async function fillPool(bouncer: TestPgBouncer): Promise<void> {
  const sleeps = Array.from({ length: POOL_SIZE }, () => bouncer.sql("SELECT pg_sleep(1)"));
  await Promise.all(sleeps);
  assert.equal((await serverPids(bouncer)).size, POOL_SIZE, "server connections after filling");
}

/** Returns the PostgreSQL backend pids of PgBouncer's server connections to the database. */
async function serverPids(bouncer: TestPgBouncer): Promise<Set<string>> {
  const servers = await bouncer.admin("SHOW SERVERS");
  return new Set(
    servers.filter((server) => server.database === DATABASE).map((server) => server.remote_pid),
  );
}

/** A reply that differs from the expected decision. */
interface Mismatch {
  program: Program;
  /** The request without its password, such as "auth:alice:example.org". */
  request: string;
  expected: boolean;
  actual: boolean;
}

/**
 * Sends every request of COMMON_CASES to each program in turn, the programs at the same time,
 * and returns the replies that differ from the expected decisions.
 */
async function sendCases(programs: Program[]): Promise<Mismatch[]> {
  const perProgram = await Promise.all(programs.map(async (program) => {
    const mismatches: Mismatch[] = [];
    for (const [request, decision] of COMMON_CASES) {
      const expected = decision.startsWith("accepted");
      const actual = await program.request(request);
      if (actual !== expected) {
        const requestWithoutPassword = request.split(":").slice(0, 3).join(":");
        mismatches.push({ program, request: requestWithoutPassword, expected, actual });
      }
    }
    return mismatches;
  }));
  return perProgram.flat();
}

/**
 * Returns the number of requests that the program logged as errors, with a reason. The logger
 * writes the first of a run of equal errors and then a line "error repeated N more times".
 */
function countLoggedErrors(stderr: string): number {
  const decisions = stderr.match(/^\S+ error (isuser|auth) \S+ .*reason=\S+/gm) ?? [];
  const repeats = [...stderr.matchAll(/^\S+ error repeated (\d+) more times /gm)];
  return decisions.length + repeats.reduce((sum, match) => sum + Number(match[1]), 0);
}

function describeMismatches(mismatches: Mismatch[]): string[] {
  return mismatches.map((mismatch) =>
    `pid ${mismatch.program.pid}: ${mismatch.request} replied ${mismatch.actual}, ` +
    `expected ${mismatch.expected}`
  );
}

/** One way of replacing PgBouncer's server connections while the programs keep running. */
interface Recycling {
  name: string;
  /** Replaces the server connections; undefined for the first round on the filled pool. */
  run?: (setup: PooledSetup) => Promise<void>;
}

const RECYCLINGS: Recycling[] = [
  { name: "filled pool" },
  {
    name: "RECONNECT on the admin console",
    run: async ({ bouncer }) => {
      await bouncer.admin(`RECONNECT ${DATABASE}`);
    },
  },
  {
    name: "pg_terminate_backend on the server",
    run: async ({ cluster }) => {
      const terminated = await cluster.terminateBackends(DATABASE);
      assert.ok(terminated >= 1, `${terminated} backends terminated`);
    },
  },
];

/**
 * Sends all cases to all programs once per entry of RECYCLINGS, after replacing the server
 * connections, and checks that each replacement gave new backends. Calls `check` with the
 * mismatches of each round.
 */
async function sendCasesWhileRecycling(
  setup: PooledSetup,
  check: (mismatches: Mismatch[], round: string) => void,
): Promise<void> {
  for (const recycling of RECYCLINGS) {
    const pidsBefore = await serverPids(setup.bouncer);
    await recycling.run?.(setup);
    check(await sendCases(setup.programs), recycling.name);

    const pidsAfter = await serverPids(setup.bouncer);
    assert.ok(pidsAfter.size >= 1, `no server connection after ${recycling.name}`);
    if (recycling.run !== undefined) {
      const reusedPids = [...pidsAfter].filter((pid) => pidsBefore.has(pid));
      assert.deepEqual(reusedPids, [], `backends kept after ${recycling.name}`);
    }
  }
}

/** Returns the number of prepared statements in the session of one pooled server connection. */
async function countServerStatements(bouncer: TestPgBouncer): Promise<number> {
  const rows = await bouncer.sql("SELECT count(*) AS statements FROM pg_prepared_statements");
  return Number(rows[0].statements);
}

pgbouncerTest("transaction pooling without prepared statements", async () => {
  await withPooledPrograms(false, async (setup) => {
    const { bouncer, programs } = setup;
    await sendCasesWhileRecycling(setup, (mismatches, round) => {
      assert.deepEqual(describeMismatches(mismatches), [], `replies after ${round}`);
    });

    // PgBouncer rejects a client whose startup packet has a parameter it does not track,
    // unless ignore_startup_parameters lists it, and that setting is empty here.
    const clients = (await bouncer.admin("SHOW CLIENTS")).filter((client) =>
      client.database === DATABASE
    );
    assert.equal(clients.length, PROGRAM_COUNT, "clients of the pooled database");
    for (const client of clients) assert.equal(client.application_name, "auth-mastodon");
    assert.equal(await countServerStatements(bouncer), 0, "statements left on a server");

    for (const program of programs) {
      const { stderr } = await program.finish();
      assert.doesNotMatch(stderr, /^\S+ error /m);
      assert.match(
        stderr,
        new RegExp(
          `info database connection opened to 127\\.0\\.0\\.1:${bouncer.port} without TLS`,
        ),
      );
    }
    assert.doesNotMatch(await bouncer.logText(), /unsupported startup parameter/);
  });
});

// NOTE: with postgres.js 3.4.10 every reply in this test came out right. When a server
// connection lacks a statement ("prepared statement ... does not exist"), postgres.js prepares
// it again under a new name and runs the query once more. Each such miss costs a failed round
// trip, and the statements stay on PgBouncer's server connections until those close. In three
// runs on a 2-core Debian 12 machine, the server logged 254 to 285 misses for the 468 requests.
pgbouncerTest("transaction pooling with prepared statements", async () => {
  await withPooledPrograms(true, async (setup) => {
    const { bouncer, programs } = setup;
    const mismatches: Mismatch[] = [];
    await sendCasesWhileRecycling(setup, (roundMismatches) => mismatches.push(...roundMismatches));

    const wrongAccepts = mismatches.filter((mismatch) => mismatch.actual);
    assert.deepEqual(describeMismatches(wrongAccepts), [], "requests accepted by mistake");
    assert.ok(
      await countServerStatements(bouncer) > 0,
      "no named statement on a server connection: the program did not prepare statements",
    );

    for (const program of programs) {
      // finish() fails unless the program exits with status 0 when stdin closes, so a crash
      // fails the test.
      const { stderr } = await program.finish();
      const falseReplies = mismatches.filter((mismatch) => mismatch.program === program).length;
      assert.ok(
        countLoggedErrors(stderr) >= falseReplies,
        `${falseReplies} false replies to requests expected true, but fewer errors logged:\n` +
          stderr,
      );
    }
  });
});
