import assert from "node:assert/strict";
import { ConfigError, DEFAULT_SOCKET_DIRECTORY, loadConfig, parseConfig } from "../lib/config.ts";
import { parseIni } from "../lib/ini.ts";

const PATH = "/etc/ejabberd/auth-mastodon.ini";

async function configError(text: string, path = PATH): Promise<string> {
  try {
    await parseConfig(text, path);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error.message;
  }
  throw new Error("expected a ConfigError");
}

Deno.test("parseConfig() applies the documented defaults", async () => {
  const config = await parseConfig("", PATH);
  assert.deepEqual(config.database.hosts, [
    { kind: "socket", directory: DEFAULT_SOCKET_DIRECTORY, port: 5432 },
  ]);
  assert.equal(config.database.name, "mastodon_production");
  assert.equal(config.database.user, "auth_mastodon");
  assert.equal(config.database.password, undefined);
  assert.equal(config.database.sslMode, "prefer");
  assert.equal(config.database.connectTimeoutSeconds, 5);
  assert.equal(config.database.queryTimeoutSeconds, 5);
  assert.equal(config.database.preparedStatements, true);
  assert.deepEqual(config.domains, []);
  assert.equal(config.auth.twoFactorPassword, false);
  assert.equal(config.auth.accessTokens, true);
  assert.equal(config.auth.movedAccounts, false);
  assert.equal(config.auth.cacheTtlSeconds, 900);
  assert.equal(config.auth.cacheMaxEntries, 10_000);
  assert.equal(config.log.file, undefined);
  assert.equal(config.log.level, "info");
});

Deno.test("parseConfig() reads every key", async () => {
  const config = await parseConfig(
    `
# comment
; another comment
[Database]
HOST = db1.example, 10.0.0.2 , /run/postgresql, [::1]
port = 5433
name = mastodon
user = reader
password = "  p#ss;w=rd:with spaces  "
sslmode = Require
connect_timeout = 2.5
query_timeout = 3
prepared_statements = no

[xmpp]
domains = Example.org, chat.example.org

[auth]
two_factor_password = yes
access_tokens = off
moved_accounts = true
cache_ttl = 0
cache_max_entries = 50

[log]
file = auth.log
level = debug
`,
    PATH,
  );
  assert.deepEqual(config.database.hosts, [
    { kind: "tcp", hostname: "db1.example", port: 5433 },
    { kind: "tcp", hostname: "10.0.0.2", port: 5433 },
    { kind: "socket", directory: "/run/postgresql", port: 5433 },
    { kind: "tcp", hostname: "::1", port: 5433 },
  ]);
  assert.equal(config.database.name, "mastodon");
  assert.equal(config.database.user, "reader");
  assert.equal(config.database.password, "  p#ss;w=rd:with spaces  ");
  assert.equal(config.database.sslMode, "require");
  assert.equal(config.database.connectTimeoutSeconds, 2.5);
  assert.equal(config.database.queryTimeoutSeconds, 3);
  assert.equal(config.database.preparedStatements, false);
  assert.deepEqual(config.domains, ["example.org", "chat.example.org"]);
  assert.equal(config.auth.twoFactorPassword, true);
  assert.equal(config.auth.accessTokens, false);
  assert.equal(config.auth.movedAccounts, true);
  assert.equal(config.auth.cacheTtlSeconds, 0);
  assert.equal(config.auth.cacheMaxEntries, 50);
  assert.equal(config.log.file, "/etc/ejabberd/auth.log");
  assert.equal(config.log.level, "debug");
});

Deno.test("parseConfig() keeps # and ; inside unquoted values", async () => {
  const config = await parseConfig("[database]\npassword = abc#def;ghi\n", PATH);
  assert.equal(config.database.password, "abc#def;ghi");
});

Deno.test("parseConfig() pairs one port with each host", async () => {
  const config = await parseConfig("[database]\nhost = a, b\nport = 5432, 6432\n", PATH);
  assert.deepEqual(config.database.hosts.map((host) => host.port), [5432, 6432]);
  const message = await configError("[database]\nhost = a, b\nport = 1, 2, 3\n");
  assert.equal(
    message,
    `Invalid config "${PATH}": key "database.port" lists 3 ports for 2 hosts: ` +
      `give one port for all hosts or one per host`,
  );
});

Deno.test("parseConfig() names file, key, value and accepted form", async () => {
  const cases: [string, string][] = [
    [
      "[database]\nport = abc\n",
      `key "database.port" (line 2) must be a port number from 1 to 65535, or one per host ` +
      `separated by commas, got "abc"`,
    ],
    ["[database]\nport = 70000\n", `key "database.port" (line 2) must be a port number`],
    [
      "[database]\nsslmode = verify\n",
      `key "database.sslmode" (line 2) must be one of "disable", "prefer", "require", ` +
      `"verify-ca", "verify-full", got "verify"`,
    ],
    [
      "[database]\nquery_timeout = 30\n",
      `key "database.query_timeout" (line 2) must be a number of seconds from 0.1 to 25, got "30"`,
    ],
    [
      "[database]\nconnect_timeout = 0\n",
      `key "database.connect_timeout" (line 2) must be a number of seconds from 0.1 to 25, got "0"`,
    ],
    [
      "[database]\nquery_timeout = 5s\n",
      `key "database.query_timeout" (line 2) must be a number of seconds`,
    ],
    [
      "[database]\nhost = db one\n",
      `key "database.host" (line 2) must be a comma-separated list of host names, IP addresses ` +
      `or Unix socket directories, got "db one"`,
    ],
    [
      "[auth]\ntwo_factor_password = maybe\n",
      `key "auth.two_factor_password" (line 2) must be "yes" or "no", got "maybe"`,
    ],
    [
      "[auth]\ncache_ttl = -1\n",
      `key "auth.cache_ttl" (line 2) must be a whole number of seconds, 0 to turn the cache off, got "-1"`,
    ],
    [
      "[log]\nlevel = verbose\n",
      `key "log.level" (line 2) must be one of "error", "warn", "info", "debug", got "verbose"`,
    ],
    [
      "[xmpp]\ndomains = example.org, bad domain\n",
      `key "xmpp.domains" (line 2) must be a comma-separated list of XMPP domains, got "bad domain"`,
    ],
    [
      "[xmpp]\ndomains = alice@example.org\n",
      `key "xmpp.domains" (line 2) must be a comma-separated list of XMPP domains, got "alice@example.org"`,
    ],
    [
      "[database]\nhost = db\nsslrootcert = /etc/ssl/ca.pem\n",
      `key "database.sslrootcert" is only used with sslmode "verify-ca" or "verify-full", but ` +
      `sslmode is "prefer": set sslmode = verify-full`,
    ],
    [
      "[database]\npassword = a\npassword_file = /etc/pw\n",
      `keys "database.password" and "database.password_file" are both set: keep one of them`,
    ],
  ];
  for (const [text, expected] of cases) {
    const message = await configError(text);
    assert.ok(
      message.startsWith(`Invalid config "${PATH}": ${expected}`),
      `for ${
        JSON.stringify(text)
      }:\n  got      ${message}\n  expected Invalid config "${PATH}": ${expected}`,
    );
  }
});

Deno.test("parseConfig() rejects unknown sections and keys", async () => {
  assert.equal(
    await configError("[auth]\ntwo_factor_pasword = yes\n"),
    `Invalid config "${PATH}": unknown key "auth.two_factor_pasword": the keys of [auth] are ` +
      `two_factor_password, access_tokens, moved_accounts, cache_ttl, cache_max_entries`,
  );
  assert.equal(
    await configError("[postgres]\nhost = db\n"),
    `Invalid config "${PATH}": unknown section [postgres]: the sections are [database], ` +
      `[xmpp], [auth], [log]`,
  );
});

Deno.test("parseConfig() reports INI syntax errors with the line", async () => {
  assert.equal(
    await configError("[database]\nhost db\n"),
    `Cannot read config "${PATH}": line 2: expected "key = value" or "[section]"`,
  );
  assert.equal(
    await configError("host = db\n"),
    `Cannot read config "${PATH}": line 1: key "host" comes before any [section] header`,
  );
  assert.equal(
    await configError("[database]\nhost = a\nhost = b\n"),
    `Cannot read config "${PATH}": line 3: key "database.host" is set twice (first on line 2)`,
  );
  assert.equal(
    await configError("[database\n"),
    `Cannot read config "${PATH}": line 1: section header must end with "]"`,
  );
});

Deno.test("parseConfig() never shows a password value in an error", async () => {
  const message = await configError(
    "[database]\npassword = Hunter2-secret\npassword_file = /x\n",
  );
  assert.ok(!message.includes("Hunter2-secret"), message);
});

Deno.test("loadConfig() reports a missing or unreadable file", async () => {
  const folder = await Deno.makeTempDir();
  try {
    await assert.rejects(
      loadConfig(`${folder}/missing.ini`),
      (error: Error) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(
          error.message,
          `Cannot read config "${folder}/missing.ini": the file does not exist`,
        );
        return true;
      },
    );
    await assert.rejects(loadConfig(folder), (error: Error) => {
      assert.equal(error.message, `Cannot read config "${folder}": it is a directory, not a file`);
      return true;
    });
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("loadConfig() reads password_file and warns about its mode", async () => {
  const folder = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${folder}/db-password`, "from-file-secret\n", { mode: 0o640 });
    await Deno.chmod(`${folder}/db-password`, 0o644);
    await Deno.writeTextFile(
      `${folder}/config.ini`,
      "[database]\npassword_file = db-password\n",
      { mode: 0o600 },
    );
    const config = await loadConfig(`${folder}/config.ini`);
    assert.equal(config.database.password, "from-file-secret");
    assert.equal(config.database.passwordFile, `${folder}/db-password`);
    assert.deepEqual(config.warnings, [
      `password file "${folder}/db-password" is readable by other users: ` +
      `run chmod o-rwx "${folder}/db-password"`,
    ]);

    await Deno.chmod(`${folder}/db-password`, 0o640);
    assert.deepEqual((await loadConfig(`${folder}/config.ini`)).warnings, []);

    await Deno.writeTextFile(`${folder}/config.ini`, "[database]\npassword_file = nothing-here\n");
    await assert.rejects(loadConfig(`${folder}/config.ini`), (error: Error) => {
      assert.equal(
        error.message,
        `Invalid config "${folder}/config.ini": key "database.password_file": cannot read ` +
          `"${folder}/nothing-here": the file does not exist`,
      );
      return true;
    });
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("loadConfig() warns when a readable config holds the password", async () => {
  const folder = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${folder}/config.ini`, "[database]\npassword = inline\n");
    await Deno.chmod(`${folder}/config.ini`, 0o644);
    const config = await loadConfig(`${folder}/config.ini`);
    assert.deepEqual(config.warnings, [
      `config "${folder}/config.ini" contains database.password and is readable by other ` +
      `users: run chmod o-rwx "${folder}/config.ini"`,
    ]);
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("loadConfig() reads sslrootcert for verify-full", async () => {
  const folder = await Deno.makeTempDir();
  try {
    const pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    await Deno.writeTextFile(`${folder}/ca.pem`, pem);
    await Deno.writeTextFile(`${folder}/not-a-cert.pem`, "hello\n");
    await Deno.writeTextFile(
      `${folder}/config.ini`,
      "[database]\nsslmode = verify-full\nsslrootcert = ca.pem\n",
    );
    const config = await loadConfig(`${folder}/config.ini`);
    assert.equal(config.database.sslRootCertFile, `${folder}/ca.pem`);
    assert.equal(config.database.sslRootCert, pem);

    await Deno.writeTextFile(
      `${folder}/config.ini`,
      "[database]\nsslmode = verify-ca\nsslrootcert = not-a-cert.pem\n",
    );
    await assert.rejects(loadConfig(`${folder}/config.ini`), (error: Error) => {
      assert.equal(
        error.message,
        `Invalid config "${folder}/config.ini": key "database.sslrootcert": ` +
          `"${folder}/not-a-cert.pem" contains no PEM certificate ("-----BEGIN CERTIFICATE-----")`,
      );
      return true;
    });
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
});

Deno.test("auth-mastodon.ini.default documents every key", async () => {
  const text = await Deno.readTextFile(new URL("../auth-mastodon.ini.default", import.meta.url));
  const commentedKeys = new Set(
    [...text.matchAll(/^[#;]?\s*([a-z_]+)\s*=/gm)].map((match) => match[1]),
  );
  const expected = [
    "host",
    "port",
    "name",
    "user",
    "password",
    "password_file",
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "query_timeout",
    "prepared_statements",
    "domains",
    "two_factor_password",
    "access_tokens",
    "moved_accounts",
    "cache_ttl",
    "cache_max_entries",
    "file",
    "level",
  ];
  for (const key of expected) assert.ok(commentedKeys.has(key), `key ${key} is not documented`);
  // The file as shipped must itself be a valid configuration.
  assert.ok(parseIni(text).has("database"));
  await parseConfig(text, "/etc/ejabberd/auth-mastodon.ini");
});
