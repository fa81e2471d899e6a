/**
 * Login rules against a real PostgreSQL server with Mastodon-shaped tables,
 * in every schema variant, through the same Authenticator that serves
 * ejabberd.
 */

import assert from "node:assert/strict";
import { Authenticator, type Decision } from "../lib/authenticator.ts";
import { parseConfig } from "../lib/config.ts";
import { Database } from "../lib/database.ts";
import { Logger } from "../lib/log.ts";
import { parseRequest } from "../lib/request.ts";
import {
  createMastodonDatabase,
  hasRequire2fa,
  PASSWORD,
  READER_PASSWORD,
  READER_ROLE,
  SCHEMA_VERSIONS,
  type SchemaVersion,
  TOKENS,
} from "./support/mastodon.ts";
import { COMMON_CASES } from "./support/cases.ts";
import { fixture } from "./support/hashes.ts";
import { TestCluster } from "./support/postgres.ts";

const cluster = await TestCluster.start();
const databaseNames = new Map<SchemaVersion, string>();
for (const version of SCHEMA_VERSIONS) {
  const name = `mastodon_${version.replace(".", "_")}`;
  await createMastodonDatabase(cluster, name, version);
  databaseNames.set(version, name);
}
const logFolder = await Deno.makeTempDir();

Deno.test.afterAll(async () => {
  await cluster.destroy();
  await Deno.remove(logFolder, { recursive: true });
});

interface Harness {
  decide(request: string | Uint8Array): Promise<Decision>;
  sql(text: string): Promise<string>;
  close(): Promise<void>;
}

async function harness(version: SchemaVersion, auth = ""): Promise<Harness> {
  const config = await parseConfig(
    `[database]
host = 127.0.0.1
port = ${cluster.port}
name = ${databaseNames.get(version)}
user = ${READER_ROLE}
password = ${READER_PASSWORD}
[xmpp]
domains = example.org, chat.example.org
[auth]
${auth}
`,
    `${logFolder}/test.ini`,
  );
  const database = new Database(config.database, { applicationName: "auth-mastodon-test" });
  const logger = new Logger({ level: "debug", file: `${logFolder}/${version}.log` });
  const authenticator = new Authenticator({ config, database, logger });
  const encoder = new TextEncoder();
  return {
    decide: (request) => {
      const bytes = typeof request === "string" ? encoder.encode(request) : request;
      return authenticator.decide(parseRequest(bytes), { deadline: performance.now() + 5000 });
    },
    sql: (text) => cluster.sql(text, databaseNames.get(version)!),
    close: async () => {
      await database.close();
      logger.close();
    },
  };
}

function authBytes(user: string, password: Uint8Array, domain = "example.org"): Uint8Array {
  const head = new TextEncoder().encode(`auth:${user}:${domain}:`);
  const bytes = new Uint8Array(head.length + password.length);
  bytes.set(head);
  bytes.set(password, head.length);
  return bytes;
}

function summary(decision: Decision): string {
  return `${decision.outcome} ${decision.method ?? "-"} ${decision.reason}`;
}

for (const version of SCHEMA_VERSIONS) {
  Deno.test(`decide() applies the account rules on Mastodon ${version}`, async () => {
    const test = await harness(version);
    try {
      for (const [request, expected] of COMMON_CASES) {
        assert.equal(summary(await test.decide(request)), expected, request);
      }
    } finally {
      await test.close();
    }
  });

  Deno.test(`decide() verifies raw password bytes on Mastodon ${version}`, async () => {
    const test = await harness(version);
    try {
      const cases: [string, string][] = [
        ["multibyte", "multibyte"],
        ["long", "long"],
        ["colons", "colons"],
        ["binary", "invalid_utf8"],
      ];
      for (const [user, name] of cases) {
        const { password } = fixture(name);
        assert.equal(
          summary(await test.decide(authBytes(user, password))),
          "accepted password ok",
          user,
        );
        const changed = password.slice();
        changed[0] ^= 0x01;
        assert.equal(
          summary(await test.decide(authBytes(user, changed))),
          "rejected password wrong-password",
          `${user} with a changed first byte`,
        );
      }
      // Bytes after the 72nd do not count, as in Mastodon's bcrypt.
      const long = fixture("long").password;
      const longer = new Uint8Array(long.length + 5).fill(0x21);
      longer.set(long);
      assert.equal(summary(await test.decide(authBytes("long", longer))), "accepted password ok");
      // The invalid UTF-8 password decoded and re-encoded is another password.
      const reencoded = new TextEncoder().encode(
        new TextDecoder().decode(fixture("invalid_utf8").password),
      );
      assert.equal(
        summary(await test.decide(authBytes("binary", reencoded))),
        "rejected password wrong-password",
      );
    } finally {
      await test.close();
    }
  });
}

Deno.test("decide() accepts the two-factor password when configured", async () => {
  const test = await harness("main", "two_factor_password = yes");
  try {
    assert.equal(
      summary(await test.decide(`auth:totp:example.org:${PASSWORD}`)),
      "accepted password ok",
    );
    assert.equal(
      summary(await test.decide(`auth:webauthn:example.org:${PASSWORD}`)),
      "accepted password ok",
    );
  } finally {
    await test.close();
  }
});

Deno.test("decide() ignores tokens when access_tokens is no", async () => {
  const test = await harness("main", "access_tokens = no");
  try {
    assert.equal(
      summary(await test.decide(`auth:totp:example.org:${TOKENS.totpValid}`)),
      "rejected password wrong-password",
    );
    assert.equal(
      summary(await test.decide(`auth:alice:example.org:${TOKENS.aliceValid}`)),
      "rejected password wrong-password",
    );
  } finally {
    await test.close();
  }
});

Deno.test("decide() lets moved accounts in when configured", async () => {
  const test = await harness("4.6", "moved_accounts = yes");
  try {
    assert.equal(
      summary(await test.decide(`auth:moved:example.org:${PASSWORD}`)),
      "accepted password ok",
    );
    assert.equal(summary(await test.decide(`isuser:moved:example.org`)), "accepted - ok");
  } finally {
    await test.close();
  }
});

for (const version of SCHEMA_VERSIONS.filter(hasRequire2fa)) {
  Deno.test(`decide() applies role two-factor requirements on Mastodon ${version}`, async () => {
    const test = await harness(version);
    try {
      // The role requires 2FA and the user has none: not usable, tokens included.
      assert.equal(
        summary(await test.decide(`auth:rolenotwofactor:example.org:${PASSWORD}`)),
        "rejected password two-factor-setup-required",
      );
      assert.equal(
        summary(
          await test.decide(`auth:rolenotwofactor:example.org:${TOKENS.roleTwoFactorValid}`),
        ),
        "rejected token two-factor-setup-required",
      );
      assert.equal(
        summary(await test.decide(`isuser:rolenotwofactor:example.org`)),
        "accepted - ok",
      );
      assert.equal(
        summary(await test.decide(`auth:roletotp:example.org:${PASSWORD}`)),
        "rejected password two-factor-required",
      );
      // The "Everyone" role (-99) applies to users without a role.
      await test.sql("UPDATE user_roles SET require_2fa = true WHERE id = -99");
      try {
        assert.equal(
          summary(await test.decide(`auth:alice:example.org:${PASSWORD}`)),
          "rejected password two-factor-setup-required",
        );
      } finally {
        await test.sql("UPDATE user_roles SET require_2fa = false WHERE id = -99");
      }
    } finally {
      await test.close();
    }
  });
}

Deno.test("decide() ignores roles before Mastodon 4.6", async () => {
  // A 4.3 role has no require_2fa column, so it cannot block a login.
  const test = await harness("4.3");
  try {
    assert.equal(
      summary(await test.decide(`auth:rolenotwofactor:example.org:${PASSWORD}`)),
      "accepted password ok",
    );
  } finally {
    await test.close();
  }
});

Deno.test("decide() treats requested_deletion_at as deleted on main", async () => {
  const test = await harness("main");
  try {
    assert.equal(summary(await test.decide(`isuser:deleting:example.org`)), "rejected - deleted");
    assert.equal(
      summary(await test.decide(`auth:deleting:example.org:${PASSWORD}`)),
      "rejected password deleted",
    );
  } finally {
    await test.close();
  }
});

Deno.test("decide() sees account changes on the next request", async () => {
  const test = await harness("main");
  try {
    const login = `auth:alice:example.org:${PASSWORD}`;
    assert.equal(summary(await test.decide(login)), "accepted password ok");
    const cached = await test.decide(login);
    assert.equal(summary(cached), "accepted password ok");
    assert.equal(cached.cache, "hit");

    await test.sql("UPDATE accounts SET suspended_at = now() WHERE id = 1");
    assert.equal(summary(await test.decide(login)), "rejected password suspended");
    await test.sql("UPDATE accounts SET suspended_at = NULL WHERE id = 1");

    await test.sql("UPDATE users SET disabled = true WHERE id = 1");
    assert.equal(summary(await test.decide(login)), "rejected password disabled");
    await test.sql("UPDATE users SET disabled = false WHERE id = 1");

    await test.sql("UPDATE users SET otp_required_for_login = true WHERE id = 1");
    assert.equal(summary(await test.decide(login)), "rejected password two-factor-required");
    await test.sql("UPDATE users SET otp_required_for_login = false WHERE id = 1");

    // A new hash (password change) makes the cached verification miss.
    await test.sql(
      `UPDATE users SET encrypted_password = '${fixture("multibyte").hash}' WHERE id = 1`,
    );
    const changed = await test.decide(login);
    assert.equal(summary(changed), "rejected password wrong-password");
    assert.equal(changed.cache, "miss");
    await test.sql(`UPDATE users SET encrypted_password = '${fixture("ascii").hash}' WHERE id = 1`);

    const again = await test.decide(login);
    assert.equal(summary(again), "accepted password ok");
    assert.equal(again.cache, "miss");
  } finally {
    await test.close();
  }
});

Deno.test("decide() takes as long for unknown users", async () => {
  // Unknown users, users without a login and wrong passwords each cost one
  // bcrypt run, so the time taken does not show which accounts exist.
  const test = await harness("main");
  try {
    const timeOf = async (request: string) => {
      const started = performance.now();
      for (let round = 0; round < 3; round++) await test.decide(request);
      return (performance.now() - started) / 3;
    };
    await timeOf("auth:alice:example.org:wrong-Password-77");
    const known = await timeOf("auth:alice:example.org:wrong-Password-77");
    for (const user of ["nobody", "mastodon.internal", "selfdeleted", "external"]) {
      const unknown = await timeOf(`auth:${user}:example.org:wrong-Password-77`);
      // The bound is loose, so a busy machine passes; without bcrypt it would be near 0.
      assert.ok(
        unknown > known * 0.5,
        `${user}: ${unknown.toFixed(1)} ms, alice ${known.toFixed(1)} ms`,
      );
    }
  } finally {
    await test.close();
  }
});

Deno.test("decide() never caches a failed attempt", async () => {
  const test = await harness("main");
  try {
    const wrong = `auth:bob:example.org:wrong-Password-77`;
    assert.equal((await test.decide(wrong)).cache, "miss");
    assert.equal((await test.decide(wrong)).cache, "miss");
    assert.equal(summary(await test.decide(wrong)), "rejected password wrong-password");
  } finally {
    await test.close();
  }
});

Deno.test("decide() answers from the reader role's privileges only", async () => {
  // The role cannot write: an INSERT as that role fails, so no query the
  // program sends could have written either.
  const output = await cluster.sql(
    `SELECT has_table_privilege('${READER_ROLE}', 'accounts', 'INSERT'),
            has_table_privilege('${READER_ROLE}', 'users', 'UPDATE'),
            has_table_privilege('${READER_ROLE}', 'statuses', 'SELECT'),
            has_table_privilege('${READER_ROLE}', 'accounts', 'SELECT')`,
    databaseNames.get("main"),
  );
  assert.equal(output.trim(), "f|f|f|t");
});
