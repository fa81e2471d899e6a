/**
 * TLS to PostgreSQL with each sslmode, against a test cluster whose server
 * certificate (for localhost and 127.0.0.1) is signed by a CA the suite
 * generates with openssl.
 */

import assert from "node:assert/strict";
import { createMastodonDatabase, READER_PASSWORD, READER_ROLE } from "./support/mastodon.ts";
import { TestCluster } from "./support/postgres.ts";
import { Program } from "./support/program.ts";
import { TcpProxy } from "./support/tcp_proxy.ts";

const tlsCluster = await TestCluster.start({ ssl: true });
await createMastodonDatabase(tlsCluster, "mastodon", "main");
const plainCluster = await TestCluster.start();
await createMastodonDatabase(plainCluster, "mastodon", "main");
const folder = await Deno.makeTempDir({ dir: "/tmp" });
// The program may not read below /dev, where the cluster may keep its files.
const caCertFile = `${folder}/ca.crt`;
const otherCaCertFile = `${folder}/other-ca.crt`;
await Deno.copyFile(tlsCluster.caCertFile, caCertFile);
await Deno.copyFile(tlsCluster.otherCaCertFile, otherCaCertFile);

Deno.test.afterAll(async () => {
  await tlsCluster.destroy();
  await plainCluster.destroy();
  await Deno.remove(folder, { recursive: true });
});

let configCount = 0;

async function config(
  cluster: TestCluster,
  database: string,
  host: string = cluster.hostname,
  port: number = cluster.port,
): Promise<string> {
  const path = `${folder}/tls-${++configCount}.ini`;
  await Deno.writeTextFile(
    path,
    `[database]
host = ${host}
port = ${port}
name = mastodon
user = ${READER_ROLE}
password = ${READER_PASSWORD}
connect_timeout = 2
query_timeout = 2
${database}
[xmpp]
domains = example.org
`,
    { mode: 0o600 },
  );
  return path;
}

/** Returns "t" when pg_stat_ssl shows TLS on the program's open connection, else "f". */
async function serverSeesTls(cluster: TestCluster): Promise<string> {
  return (await cluster.sql(
    `SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
     WHERE a.application_name = 'auth-mastodon'`,
  )).trim();
}

/** Runs one isuser request; `connection` is "t" when the server saw TLS, "f" when not. */
async function login(path: string, cluster: TestCluster = tlsCluster) {
  await using program = await Program.start({ args: ["-c", path] });
  const accepted = await program.request("isuser:alice:example.org");
  const connection = accepted ? await serverSeesTls(cluster) : "";
  const { stderr } = await program.finish();
  return { accepted, connection, stderr };
}

Deno.test("sslmode require encrypts without checking the certificate", async () => {
  const result = await login(await config(tlsCluster, "sslmode = require"));
  assert.equal(result.accepted, true, result.stderr);
  assert.equal(result.connection, "t");
  assert.match(result.stderr, /database connection opened to 127\.0\.0\.1:\d+ with TLS/);
});

Deno.test("sslmode verify-full accepts the right CA and host", async () => {
  for (const host of ["127.0.0.1", "localhost"]) {
    const path = await config(
      tlsCluster,
      `sslmode = verify-full\nsslrootcert = ${caCertFile}`,
      host,
    );
    const result = await login(path);
    assert.equal(result.accepted, true, `${host}: ${result.stderr}`);
    assert.equal(result.connection, "t");
  }
});

Deno.test("sslmode verify-full rejects a certificate from another CA", async () => {
  const path = await config(
    tlsCluster,
    `sslmode = verify-full\nsslrootcert = ${otherCaCertFile}`,
  );
  const result = await login(path);
  assert.equal(result.accepted, false);
  assert.match(
    result.stderr,
    /error isuser alice@example\.org reason=database-unavailable time=\S+ \(cannot connect: 127\.0\.0\.1:\d+: TLS .*certificate.* \(sslmode is "verify-full": set database\.sslrootcert to the CA that signed the server certificate\)\)/,
  );
  assert.doesNotMatch(result.stderr, /database connection opened/);
});

Deno.test("sslmode verify-full rejects a certificate for another host", async () => {
  // The certificate names localhost and 127.0.0.1, not ::1.
  await using proxy = await TcpProxy.start(
    { hostname: tlsCluster.hostname, port: tlsCluster.port },
    { listen: "::1" },
  );
  const rootCert = `sslrootcert = ${caCertFile}`;
  const fullCheck = await login(
    await config(tlsCluster, `sslmode = verify-full\n${rootCert}`, "::1", proxy.port),
  );
  assert.equal(fullCheck.accepted, false);
  assert.match(
    fullCheck.stderr,
    /cannot connect: \[::1\]:\d+: TLS .* \(sslmode is "verify-full": the certificate must name the host as written in database\.host\)/,
  );
  // verify-ca checks the signature only, so the same certificate passes.
  const caCheck = await login(
    await config(tlsCluster, `sslmode = verify-ca\n${rootCert}`, "::1", proxy.port),
  );
  assert.equal(caCheck.accepted, true, caCheck.stderr);
});

Deno.test("TLS modes never fall back to plain text", async () => {
  for (const mode of ["require", "verify-ca", "verify-full"]) {
    const rootCert = mode === "require" ? "" : `sslrootcert = ${caCertFile}`;
    const path = await config(plainCluster, `sslmode = ${mode}\n${rootCert}`);
    const result = await login(path, plainCluster);
    assert.equal(result.accepted, false, mode);
    assert.match(
      result.stderr,
      new RegExp(
        `cannot connect: 127\\.0\\.0\\.1:\\d+: the server does not support TLS, but sslmode is "${mode}": turn on ssl in postgresql\\.conf or lower sslmode`,
      ),
    );
  }
});

Deno.test("sslmode prefer and disable connect to a server without TLS", async () => {
  for (const mode of ["prefer", "disable"]) {
    await using program = await Program.start({
      args: ["-c", await config(plainCluster, `sslmode = ${mode}`)],
    });
    assert.equal(await program.request("isuser:alice:example.org"), true);
    assert.equal(await serverSeesTls(plainCluster), "f");
    const { stderr } = await program.finish();
    assert.match(stderr, /database connection opened to 127\.0\.0\.1:\d+ without TLS/);
  }
});

Deno.test("sslmode prefer uses TLS when the server offers it", async () => {
  const result = await login(await config(tlsCluster, "sslmode = prefer"));
  assert.equal(result.accepted, true);
  assert.equal(result.connection, "t");
});
