/**
 * `auth-mastodon check` and `auth-mastodon test` against the real test
 * database, with a good role, a role with too many privileges and one with
 * too few, run as the compiled binary would be.
 */

import assert from "node:assert/strict";
import { accountStatesQuery, countAccountStates } from "../lib/accounts.ts";
import { Authenticator } from "../lib/authenticator.ts";
import { parseConfig } from "../lib/config.ts";
import { Database } from "../lib/database.ts";
import { Logger } from "../lib/log.ts";
import { parseRequest } from "../lib/request.ts";
import { detectSchema } from "../lib/schema.ts";
import { fixture } from "./support/hashes.ts";
import {
  accountSpecs,
  createMastodonDatabase,
  PASSWORD,
  READER_PASSWORD,
  READER_ROLE,
  SCHEMA_VERSIONS,
  TOKENS,
} from "./support/mastodon.ts";
import { TestCluster } from "./support/postgres.ts";
import { runCommand, startTaskArguments } from "./support/program.ts";

const cluster = await TestCluster.start();
for (const version of SCHEMA_VERSIONS) {
  await createMastodonDatabase(cluster, `mastodon_${version.replace(".", "_")}`, version);
}
const folder = await Deno.makeTempDir({ dir: "/tmp" });

Deno.test.afterAll(async () => {
  await cluster.destroy();
  await Deno.remove(folder, { recursive: true });
});

let configCount = 0;

async function config(
  options: { user?: string; database?: string; xmpp?: string; port?: number } = {},
): Promise<string> {
  const path = `${folder}/check-${++configCount}.ini`;
  await Deno.writeTextFile(
    path,
    `[database]
host = ${cluster.hostname}
port = ${options.port ?? cluster.port}
name = ${options.database ?? "mastodon_main"}
user = ${options.user ?? READER_ROLE}
password = ${READER_PASSWORD}
query_timeout = 2
connect_timeout = 2
[xmpp]
domains = ${options.xmpp ?? "example.org"}
`,
    { mode: 0o600 },
  );
  return path;
}

Deno.test("check passes with a read-only role", async () => {
  const path = await config();
  const result = await runCommand(["check", "-c", path]);
  assert.equal(result.code, 0, result.stdout);
  const lines = result.stdout.split("\n");
  const expected = [
    `auth-mastodon 0.1.0: checking ${path}`,
    "",
    "  ok    the configuration file is valid",
    "  ok    XMPP domains: example.org",
    new RegExp(
      `^  ok    connected to 127\\.0\\.0\\.1:${cluster.port} as auth_mastodon, database mastodon_main, without TLS$`,
    ),
    /^ {2}ok {4}PostgreSQL 15\.\d+/,
    "  ok    SELECT on accounts, users, webauthn_credentials, oauth_access_tokens, user_roles",
    /^ {2}ok {4}schema features: user_roles,require_2fa,requested_deletion_at \(Mastodon later than 4\.6 \(main\), PostgreSQL 15/,
    "  ok    8 local accounts can log in with a password",
    "  info  13 cannot: 1 unconfirmed, 1 pending approval, 1 disabled, 1 suspended, 2 deleted, " +
    "1 memorial, 1 moved, 1 missing the two-factor setup their role requires, " +
    "1 external (LDAP, PAM or OmniAuth; token only), 3 two-factor (token only)",
    "  info  1 local account without a login, such as the instance actor: not XMPP users",
    "",
    "All checks passed, 0 warnings.",
  ];
  expected.forEach((line, index) => {
    if (typeof line === "string") assert.equal(lines[index], line);
    else assert.match(lines[index], line);
  });
});

Deno.test("check on Mastodon 3.5 needs no user_roles", async () => {
  const result = await runCommand(["check", "-c", await config({ database: "mastodon_3_5" })]);
  assert.equal(result.code, 0, result.stdout);
  assert.match(
    result.stdout,
    /ok {4}SELECT on accounts, users, webauthn_credentials, oauth_access_tokens\n/,
  );
  assert.match(result.stdout, /schema features: base \(Mastodon 3\.5 to 3\.x, PostgreSQL/);
  assert.match(result.stdout, /ok {4}8 local accounts can log in with a password/);
});

Deno.test("check fails a role with too few privileges", async () => {
  await cluster.sql(
    `CREATE ROLE narrow_reader LOGIN PASSWORD '${READER_PASSWORD}';
     GRANT SELECT ON accounts, users TO narrow_reader;`,
    "mastodon_main",
  );
  try {
    const result = await runCommand(["check", "-c", await config({ user: "narrow_reader" })]);
    assert.equal(result.code, 1, result.stdout);
    for (const table of ["webauthn_credentials", "oauth_access_tokens", "user_roles"]) {
      assert.ok(
        result.stdout.includes(
          `  FAIL  no SELECT on ${table}: run GRANT SELECT ON ${table} TO narrow_reader;\n`,
        ),
        `no GRANT line for ${table}:\n${result.stdout}`,
      );
    }
    assert.match(result.stdout, /ok {4}SELECT on accounts, users\n/);
    assert.match(result.stdout, /\n3 checks failed, 0 warnings\.\n$/);
  } finally {
    await cluster.sql("DROP OWNED BY narrow_reader; DROP ROLE narrow_reader;", "mastodon_main");
  }
});

Deno.test("check warns about a role that can write", async () => {
  await cluster.sql(
    `CREATE ROLE broad_reader LOGIN PASSWORD '${READER_PASSWORD}';
     GRANT SELECT ON accounts, users, webauthn_credentials, oauth_access_tokens, user_roles
       TO broad_reader;
     GRANT INSERT, UPDATE ON users TO broad_reader;
     GRANT DELETE ON statuses TO broad_reader;`,
    "mastodon_main",
  );
  try {
    const result = await runCommand(["check", "-c", await config({ user: "broad_reader" })]);
    assert.equal(result.code, 0, result.stdout);
    assert.ok(
      result.stdout.includes(
        "  warn  broad_reader can change data, which auth-mastodon never does: " +
          "statuses (DELETE), users (INSERT, UPDATE); run REVOKE INSERT, UPDATE, DELETE, " +
          "TRUNCATE ON ALL TABLES IN SCHEMA public FROM broad_reader;\n",
      ),
      result.stdout,
    );
    assert.match(result.stdout, /\nAll checks passed, 1 warning\.\n$/);
  } finally {
    await cluster.sql("DROP OWNED BY broad_reader; DROP ROLE broad_reader;", "mastodon_main");
  }
});

Deno.test("check warns about a superuser and missing domains", async () => {
  const path = await config({ user: "postgres", xmpp: "" });
  const text = await Deno.readTextFile(path);
  await Deno.writeTextFile(path, text.replace(READER_PASSWORD, cluster.superuserPassword));
  const result = await runCommand(["check", "-c", path]);
  assert.equal(result.code, 0, result.stdout);
  assert.match(result.stdout, /warn {2}no \[xmpp\] domains: every XMPP domain is looked up/);
  assert.match(result.stdout, /warn {2}postgres is a superuser and could change any data/);
  assert.doesNotMatch(result.stdout, /can change data/);
});

Deno.test("check reports an invalid config and an unreachable database", async () => {
  const invalid = `${folder}/invalid.ini`;
  await Deno.writeTextFile(invalid, "[database]\nsslmode = sometimes\n");
  const invalidResult = await runCommand(["check", "-c", invalid]);
  assert.equal(invalidResult.code, 1);
  assert.match(
    invalidResult.stdout,
    /FAIL {2}Invalid config ".*invalid\.ini": key "database\.sslmode" \(line 2\) must be one of/,
  );

  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = listener.addr.port;
  listener.close();
  const unreachable = await config({ port: deadPort });
  const result = await runCommand(["check", "-c", unreachable]);
  assert.equal(result.code, 1, result.stdout);
  assert.match(
    result.stdout,
    new RegExp(
      `FAIL {2}cannot query the database: cannot connect: 127\\.0\\.0\\.1:${deadPort}: connection refused`,
    ),
  );
});

Deno.test("check warns about a readable password file", async () => {
  const passwordFile = `${folder}/db-password`;
  await Deno.writeTextFile(passwordFile, `${READER_PASSWORD}\n`);
  await Deno.chmod(passwordFile, 0o644);
  const path = await config();
  const text = await Deno.readTextFile(path);
  await Deno.writeTextFile(
    path,
    text.replace(`password = ${READER_PASSWORD}`, `password_file = ${passwordFile}`),
  );
  const result = await runCommand(["check", "-c", path]);
  assert.equal(result.code, 0, result.stdout);
  assert.ok(
    result.stdout.includes(
      `  warn  password file "${passwordFile}" is readable by other users: run chmod o-rwx "${passwordFile}"\n`,
    ),
    result.stdout,
  );
});

for (const version of SCHEMA_VERSIONS) {
  Deno.test(`check counts agree with decide() on Mastodon ${version}`, async () => {
    // Every account's state in the report's SQL is the reason decide() gives for its password.
    const parsed = await parseConfig(
      await Deno.readTextFile(await config({ database: `mastodon_${version.replace(".", "_")}` })),
      `${folder}/agree.ini`,
    );
    const database = new Database(parsed.database, { applicationName: "check-test" });
    const logger = new Logger({ level: "error" });
    const authenticator = new Authenticator({ config: parsed, database, logger });
    try {
      const limits = { deadline: performance.now() + 10_000 };
      const features = await detectSchema(database, { ...limits, accessTokens: true });
      const rows = await database.query<{ username: string; state: string }>(
        accountStatesQuery(features, { movedAccounts: false, twoFactorPassword: false }),
        [],
        limits,
      );
      const passwords: Record<string, Uint8Array> = {
        multibyte: fixture("multibyte").password,
        long: fixture("long").password,
        colons: fixture("colons").password,
        binary: fixture("invalid_utf8").password,
      };
      for (const spec of accountSpecs(version).filter((spec) => spec.domain === undefined)) {
        const row = rows.find((candidate) => candidate.username === spec.username);
        assert.ok(row, `no state for ${spec.username}`);
        const password = passwords[spec.username] ?? new TextEncoder().encode(PASSWORD);
        const head = new TextEncoder().encode(`auth:${spec.username.toLowerCase()}:example.org:`);
        const request = new Uint8Array(head.length + password.length);
        request.set(head);
        request.set(password, head.length);
        const decision = await authenticator.decide(parseRequest(request), {
          deadline: performance.now() + 10_000,
        });
        const expected = row.state === "no-login" ? "unknown-user" : row.state;
        assert.equal(decision.reason, expected, spec.username);
      }
      const counts = await countAccountStates(database, features, {
        ...limits,
        movedAccounts: false,
        twoFactorPassword: false,
      });
      assert.equal([...counts.values()].reduce((sum, count) => sum + count, 0), rows.length);
    } finally {
      await database.close();
      logger.close();
    }
  });
}

Deno.test("test subcommand decides a login from stdin", async () => {
  const path = await config();
  const accepted = await runCommand(["test", "Alice@Example.org", "-c", path], {
    stdin: `${PASSWORD}\n`,
  });
  assert.equal(accepted.code, 0, accepted.stderr);
  assert.match(
    accepted.stdout,
    /^as ejabberd sends it: alice@example\.org\naccepted ok \(method password, \d+\.\d ms\)\n$/,
  );

  const rejected = await runCommand(["test", "alice@example.org", "-c", path], {
    stdin: "wrong-Password-77\r\n",
  });
  assert.equal(rejected.code, 1);
  assert.match(rejected.stdout, /^rejected wrong-password \(method password, \d+\.\d ms\)\n$/);

  const token = await runCommand(["test", "totp@example.org", "-c", path], {
    stdin: TOKENS.totpValid,
  });
  assert.equal(token.code, 0);
  assert.match(token.stdout, /^accepted ok \(method token, \d+\.\d ms\)\n$/);

  const twoFactor = await runCommand(["test", "totp@example.org", "-c", path], {
    stdin: `${PASSWORD}\n`,
  });
  assert.equal(twoFactor.code, 1);
  assert.match(twoFactor.stdout, /^rejected two-factor-required /);

  const suspended = await runCommand(["test", "suspended@example.org", "-c", path], {
    stdin: `${PASSWORD}\n`,
  });
  assert.equal(suspended.code, 1);
  assert.match(suspended.stdout, /^rejected suspended /);
});

Deno.test("test subcommand reads raw password bytes", async () => {
  const { password } = fixture("invalid_utf8");
  const result = await runCommand(["test", "binary@example.org", "-c", await config()], {
    stdin: new Uint8Array([...password, 0x0a]),
  });
  assert.equal(result.code, 0, result.stdout);
  assert.match(result.stdout, /^accepted ok /);
});

Deno.test("test subcommand reports usage and input errors", async () => {
  const empty = await runCommand(["test", "alice@example.org", "-c", await config()], {
    stdin: "",
  });
  assert.equal(empty.code, 1);
  assert.equal(empty.stderr, "auth-mastodon: no password on stdin\n");

  const noDomain = await runCommand(["test", "alice", "-c", await config()]);
  assert.equal(noDomain.code, 2);
  assert.equal(
    noDomain.stderr,
    'auth-mastodon: test needs USER@DOMAIN, such as alice@example.org, got "alice"\n',
  );
  const foreign = await runCommand(["test", "alice@other.example", "-c", await config()], {
    stdin: `${PASSWORD}\n`,
  });
  assert.equal(foreign.code, 1);
  assert.match(foreign.stdout, /^rejected foreign-domain /);
});

Deno.test("test subcommand prompts without echo at a terminal", async () => {
  const path = await config();
  const command = [
    Deno.execPath(),
    ...await startTaskArguments(),
    "test",
    "alice@example.org",
    "-c",
    path,
  ]
    .map((word) => `'${word}'`).join(" ");
  // script(1) runs the program on a pseudo-terminal, whose echo would show the password.
  const child = new Deno.Command("script", {
    args: ["-qec", command, "/dev/null"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  const reader = child.stdout.getReader();
  let output = "";
  const decoder = new TextDecoder();
  while (!output.includes("Password for alice@example.org: ")) {
    const { value, done } = await reader.read();
    if (done) break;
    output += decoder.decode(value);
  }
  const writer = child.stdin.getWriter();
  // A typo, corrected with backspace, and Enter.
  await writer.write(new TextEncoder().encode(`${PASSWORD}x\x7f\r`));
  await writer.close();
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    output += decoder.decode(value);
  }
  const status = await child.status;
  await child.stderr.cancel();
  assert.equal(status.code, 0, output);
  assert.match(output, /accepted ok \(method password/);
  assert.ok(!output.includes(PASSWORD), "the password was echoed");
});
