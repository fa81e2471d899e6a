/**
 * Fault injection against a real PostgreSQL server that the tests own: it is
 * stopped, restarted, frozen with SIGSTOP, put behind a proxy that drops or
 * swallows connections, and given wrong credentials and schemas. The program
 * must reply false within query_timeout, log the cause, keep running, and
 * recover by itself.
 */

import assert from "node:assert/strict";
import {
  createMastodonDatabase,
  PASSWORD,
  READER_PASSWORD,
  READER_ROLE,
} from "./support/mastodon.ts";
import { TestCluster } from "./support/postgres.ts";
import { frame, Program } from "./support/program.ts";
import { TcpProxy } from "./support/tcp_proxy.ts";

const cluster = await TestCluster.start();
await createMastodonDatabase(cluster, "mastodon", "main");
const folder = await Deno.makeTempDir({ dir: "/tmp" });

Deno.test.afterAll(async () => {
  await cluster.destroy();
  await Deno.remove(folder, { recursive: true });
});

/** Seconds each request may spend on the database in these tests. */
const QUERY_TIMEOUT = 1;
/** Upper bound for a reply that must come within QUERY_TIMEOUT, with room for a busy machine. */
const REPLY_BOUND_MS = QUERY_TIMEOUT * 1000 + 1500;

interface IniOptions {
  host?: string;
  port?: string;
  name?: string;
  user?: string;
  password?: string;
  connectTimeout?: number;
  queryTimeout?: number;
  database?: string;
  log?: string;
  xmpp?: string;
}

let configCount = 0;

async function ini(options: IniOptions = {}): Promise<string> {
  const path = `${folder}/config-${++configCount}.ini`;
  await Deno.writeTextFile(
    path,
    `[database]
host = ${options.host ?? cluster.hostname}
port = ${options.port ?? cluster.port}
name = ${options.name ?? "mastodon"}
user = ${options.user ?? READER_ROLE}
password = ${options.password ?? READER_PASSWORD}
connect_timeout = ${options.connectTimeout ?? QUERY_TIMEOUT}
query_timeout = ${options.queryTimeout ?? QUERY_TIMEOUT}
${options.database ?? ""}
[xmpp]
domains = ${options.xmpp ?? "example.org"}
[log]
${options.log ?? "level = info"}
`,
    { mode: 0o600 },
  );
  return path;
}

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await work();
  return { value, ms: performance.now() - started };
}

/** Sends isuser for alice and checks the reply and that it came within REPLY_BOUND_MS. */
async function expectIsUser(program: Program, expected: boolean): Promise<void> {
  const { value, ms } = await timed(() => program.request("isuser:alice:example.org"));
  assert.equal(value, expected, `stderr:\n${program.stderr}`);
  assert.ok(ms < REPLY_BOUND_MS, `reply took ${ms.toFixed(0)} ms`);
}

function count(text: string, pattern: RegExp): number {
  return [...text.matchAll(new RegExp(pattern.source, "g"))].length;
}

async function freePort(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return await Promise.resolve(port);
}

Deno.test("database down at start-up recovers without a restart", async () => {
  await cluster.stop();
  let restarted = false;
  try {
    await using program = await Program.start({ args: ["-c", await ini()] });
    await expectIsUser(program, false);
    await expectIsUser(program, false);
    await cluster.start();
    restarted = true;
    await expectIsUser(program, true);
    assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), true);
    const { stderr } = await program.finish();
    assert.match(
      stderr,
      /error isuser alice@example\.org reason=database-unavailable time=\S+ \(cannot connect: 127\.0\.0\.1:\d+: connection refused/,
    );
    const repeated = stderr.indexOf("error repeated 1 more time in ");
    const recovered = stderr.indexOf("info database available again after 2 failed requests");
    assert.ok(repeated !== -1, stderr);
    assert.ok(recovered > repeated, "the repeat count must come before the recovery line");
  } finally {
    if (!restarted) await cluster.start();
  }
});

Deno.test("repeated database errors are logged with a count", async () => {
  await cluster.stop();
  try {
    await using program = await Program.start({ args: ["-c", await ini()] });
    for (let index = 0; index < 30; index++) await expectIsUser(program, false);
    const { stderr } = await program.finish();
    assert.equal(count(stderr, /error isuser alice@example\.org reason=database-unavailable/), 1);
    assert.match(
      stderr,
      /error repeated 29 more times in \d+ s \(database-unavailable: cannot connect/,
    );
  } finally {
    await cluster.start();
  }
});

Deno.test("server restart and terminated backends are survived", async () => {
  await using program = await Program.start({ args: ["-c", await ini()] });
  await expectIsUser(program, true);
  await cluster.restart();
  await expectIsUser(program, true);
  assert.equal(await cluster.terminateBackends("mastodon"), 1);
  await expectIsUser(program, true);
  assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), true);
  const { stderr } = await program.finish();
  assert.doesNotMatch(stderr, /reason=database-unavailable/);
  assert.equal(count(stderr, /info database connection opened to 127\.0\.0\.1:\d+ without TLS/), 3);
});

Deno.test("a read on a dead connection is retried once", async () => {
  await using proxy = await TcpProxy.start({ hostname: cluster.hostname, port: cluster.port });
  const config = await ini({ port: String(proxy.port) });
  await using program = await Program.start({ args: ["-c", config] });
  await expectIsUser(program, true);
  // The connection dies silently: the program finds out when it sends the next query.
  proxy.breakOnNextWrite();
  await expectIsUser(program, true);
  proxy.breakOnNextWrite();
  assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), true);
  const { stderr } = await program.finish();
  assert.doesNotMatch(stderr, /reason=database-unavailable/);
  assert.equal(proxy.connectionCount, 3);
});

Deno.test("a frozen server costs each request query_timeout only", async () => {
  await using program = await Program.start({ args: ["-c", await ini()] });
  await expectIsUser(program, true);
  cluster.freeze();
  try {
    await expectIsUser(program, false);
    await expectIsUser(program, false);
    const auth = await timed(() => program.request(`auth:alice:example.org:${PASSWORD}`));
    assert.equal(auth.value, false);
    assert.ok(auth.ms < REPLY_BOUND_MS, `reply took ${auth.ms.toFixed(0)} ms`);
  } finally {
    cluster.thaw();
  }
  await expectIsUser(program, true);
  const { stderr } = await program.finish();
  assert.match(
    stderr,
    /error isuser alice@example\.org reason=database-unavailable time=\S+ \((no response within query_timeout \(1 s\)|cannot connect: 127\.0\.0\.1:\d+: connection timed out)/,
  );
  assert.match(stderr, /info database available again after 3 failed requests/);
});

Deno.test("a connection that stops answering is abandoned", async () => {
  await using proxy = await TcpProxy.start({ hostname: cluster.hostname, port: cluster.port });
  await using program = await Program.start({
    args: ["-c", await ini({ port: String(proxy.port) })],
  });
  await expectIsUser(program, true);
  // The open connection goes silent; new connections through the proxy work.
  proxy.stallOpenConnections();
  await expectIsUser(program, false);
  await expectIsUser(program, true);
  assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), true);
  const { stderr } = await program.finish();
  assert.match(stderr, /\(no response within query_timeout \(1 s\) from 127\.0\.0\.1:\d+\)/);
  assert.equal(proxy.connectionCount, 2);
});

Deno.test("a listener that never answers costs each request query_timeout only", async () => {
  await using proxy = await TcpProxy.start({ hostname: cluster.hostname, port: cluster.port });
  proxy.setMode("blackhole");
  await using program = await Program.start({
    args: ["-c", await ini({ port: String(proxy.port) })],
  });
  await expectIsUser(program, false);
  await expectIsUser(program, false);
  const { stderr } = await program.finish();
  assert.match(
    stderr,
    /reason=database-unavailable time=\S+ \(no response within query_timeout \(1 s\) from 127\.0\.0\.1:\d+ while connecting\)/,
  );
});

Deno.test("EOF ends the program while the server is frozen", async () => {
  const config = await ini({ queryTimeout: 10 });
  await using program = await Program.start({ args: ["-c", config] });
  await expectIsUser(program, true);
  cluster.freeze();
  try {
    await program.send(frame("isuser:alice:example.org"));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await program.closeStdin();
    const result = await program.exit();
    assert.equal(result.code, 0);
    assert.ok(result.waitedMs < 1500, `exit took ${result.waitedMs.toFixed(0)} ms`);
  } finally {
    cluster.thaw();
  }
});

Deno.test("wrong database credentials are logged with the fix", async () => {
  const wrongPassword = "not-the-db-Password-31";
  await using program = await Program.start({
    args: ["-c", await ini({ password: wrongPassword })],
  });
  await expectIsUser(program, false);
  await expectIsUser(program, false);
  assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), false);
  const { stderr } = await program.finish();
  assert.match(
    stderr,
    /password authentication failed for user "auth_mastodon": check database\.user and database\.password \(or password_file\) in the config, and pg_hba\.conf on the server/,
  );
  assert.ok(!stderr.includes(wrongPassword), "the database password appears in stderr");
});

Deno.test("missing privileges are logged with the GRANT", async () => {
  await cluster.sql(
    `CREATE ROLE partial_reader LOGIN PASSWORD '${READER_PASSWORD}';
     GRANT SELECT ON accounts, users TO partial_reader;`,
    "mastodon",
  );
  try {
    await using program = await Program.start({
      args: ["-c", await ini({ user: "partial_reader" })],
    });
    await expectIsUser(program, false);
    const { stderr } = await program.finish();
    assert.match(
      stderr,
      /permission denied for table webauthn_credentials, oauth_access_tokens, user_roles: GRANT SELECT ON webauthn_credentials TO partial_reader; GRANT SELECT ON oauth_access_tokens TO partial_reader; GRANT SELECT ON user_roles TO partial_reader;/,
    );
  } finally {
    await cluster.sql("DROP OWNED BY partial_reader; DROP ROLE partial_reader;", "mastodon");
  }
});

Deno.test("a database without Mastodon's tables is reported", async () => {
  await cluster.createDatabase("not_mastodon");
  await cluster.sql(
    `CREATE TABLE accounts (id bigint, username varchar);
     GRANT SELECT ON accounts TO ${READER_ROLE};`,
    "not_mastodon",
  );
  await using program = await Program.start({ args: ["-c", await ini({ name: "not_mastodon" })] });
  await expectIsUser(program, false);
  await cluster.sql(
    `CREATE TABLE users (id bigint); CREATE TABLE webauthn_credentials (user_id bigint);
     CREATE TABLE oauth_access_tokens (token varchar);`,
    "not_mastodon",
  );
  await expectIsUser(program, false);
  const { stderr } = await program.finish();
  assert.match(
    stderr,
    /table users, webauthn_credentials, oauth_access_tokens not found: database\.name must be the Mastodon database/,
  );
  assert.match(
    stderr,
    /column accounts\.domain, accounts\.suspended_at, accounts\.memorial, accounts\.moved_to_account_id, users\.account_id, .* not found: this is not a Mastodon 3\.5 or later schema/,
  );
});

Deno.test("a missing config file is reported and reloaded on SIGHUP", async () => {
  const path = `${folder}/appears-later.ini`;
  await using program = await Program.start({ args: ["-c", path] });
  await expectIsUser(program, false);
  await Deno.copyFile(await ini(), path);
  program.kill("SIGHUP");
  let accepted = false;
  for (let attempt = 0; attempt < 50 && !accepted; attempt++) {
    accepted = await program.request("isuser:alice:example.org");
    if (!accepted) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(accepted, true, program.stderr);
  const { stderr } = await program.finish();
  assert.match(
    stderr,
    new RegExp(`error Cannot read config "${path}": the file does not exist; replying false`),
  );
  assert.match(stderr, /error isuser alice@example\.org reason=not-configured/);
  assert.match(stderr, /info reloaded auth-mastodon /);
});

Deno.test("the second host serves when the first is gone", async () => {
  const deadPort = await freePort();
  const config = await ini({
    host: `${cluster.hostname}, ${cluster.hostname}`,
    port: `${deadPort}, ${cluster.port}`,
  });
  await using program = await Program.start({ args: ["-c", config] });
  await expectIsUser(program, true);
  assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), true);
  const { stderr } = await program.finish();
  assert.match(
    stderr,
    new RegExp(`database connection opened to 127\\.0\\.0\\.1:${cluster.port} without TLS`),
  );
  assert.doesNotMatch(stderr, /reason=database-unavailable/);
});

Deno.test("a host that stops answering is tried last", async () => {
  await using proxy = await TcpProxy.start({ hostname: cluster.hostname, port: cluster.port });
  const config = await ini({
    host: `${cluster.hostname}, ${cluster.hostname}`,
    port: `${proxy.port}, ${cluster.port}`,
    connectTimeout: 0.3,
    queryTimeout: 3,
  });
  await using program = await Program.start({ args: ["-c", config] });
  await expectIsUser(program, true);
  proxy.setMode("blackhole");
  await cluster.terminateBackends("mastodon");
  // The first host swallows the new connection; the second host serves after connect_timeout.
  await expectIsUser(program, true);
  const connections = proxy.connectionCount;
  await cluster.terminateBackends("mastodon");
  await expectIsUser(program, true);
  assert.equal(proxy.connectionCount, connections, "the failed host was tried again at once");
  const { stderr } = await program.finish();
  assert.match(stderr, new RegExp(`database connection opened to 127\\.0\\.0\\.1:${cluster.port}`));
});

Deno.test("SIGTERM finishes the request in flight and exits 0", async () => {
  const config = await ini({ queryTimeout: 2 });
  await using program = await Program.start({ args: ["-c", config] });
  await expectIsUser(program, true);
  cluster.freeze();
  try {
    await program.send(frame("isuser:alice:example.org"));
    await new Promise((resolve) => setTimeout(resolve, 200));
    program.kill("SIGTERM");
    assert.equal(await program.reply(5000), false);
    const result = await program.exit();
    assert.equal(result.code, 0);
    assert.deepEqual([...result.extraStdout], []);
    assert.match(
      result.stderr,
      /info signal received by pid \d+: finishing the request in flight, then exiting/,
    );
    assert.match(result.stderr, /info stopping \(signal\)/);
  } finally {
    cluster.thaw();
  }
});

Deno.test("SIGINT stops an idle program with exit 0", async () => {
  await using program = await Program.start({ args: ["-c", await ini()] });
  await expectIsUser(program, true);
  program.kill("SIGINT");
  const result = await program.exit();
  assert.equal(result.code, 0);
  assert.ok(result.waitedMs < 2000, `exit took ${result.waitedMs.toFixed(0)} ms`);
});

Deno.test("SIGHUP reopens the log file and reloads the configuration", async () => {
  const logFile = `${folder}/rotated.log`;
  const config = await ini({ log: `file = ${logFile}` });
  await using program = await Program.start({ args: ["-c", config], logFile });
  await expectIsUser(program, true);
  assert.equal(await program.request("isuser:alice:other.example"), false);

  await Deno.rename(logFile, `${logFile}.1`);
  const reloaded = await ini({ log: `file = ${logFile}`, xmpp: "example.org, other.example" });
  await Deno.copyFile(reloaded, config);
  program.kill("SIGHUP");
  let accepted = false;
  for (let attempt = 0; attempt < 50 && !accepted; attempt++) {
    accepted = await program.request("isuser:alice:other.example");
    if (!accepted) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(accepted, true);
  await program.finish();

  const old = await Deno.readTextFile(`${logFile}.1`);
  const current = await Deno.readTextFile(logFile);
  assert.match(old, /rejected isuser alice@other\.example reason=foreign-domain/);
  assert.doesNotMatch(old, /accepted isuser alice@other\.example/);
  assert.match(
    current,
    /info SIGHUP received by pid \d+: log file reopened, reloading the configuration/,
  );
  assert.match(current, /info reloaded auth-mastodon /);
  assert.match(current, /accepted isuser alice@other\.example reason=ok/);
});

Deno.test("a bad config on reload keeps the previous one", async () => {
  const config = await ini();
  await using program = await Program.start({ args: ["-c", config] });
  await expectIsUser(program, true);
  await Deno.writeTextFile(config, "[database]\nport = nope\n");
  program.kill("SIGHUP");
  for (let attempt = 0; attempt < 50 && !/reload failed/.test(program.stderr); attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await expectIsUser(program, true);
  const { stderr } = await program.finish();
  assert.match(
    stderr,
    /error reload failed in pid \d+, keeping the previous configuration: Invalid config ".*": key "database\.port" \(line 2\) must be a port number/,
  );
});
