/**
 * Mastodon-shaped tables and accounts for the tests, in four schema
 * variants: 3.5 (no roles), 4.3 (`user_roles` without `require_2fa`), 4.6
 * (`user_roles.require_2fa`) and main (`accounts.requested_deletion_at`). Column names and types follow
 * Mastodon's db/schema.rb at those releases, cut to what login depends on
 * plus a few columns it does not.
 *
 * @module
 */

import { fixture, fixtureNames } from "./hashes.ts";
import type { TestCluster } from "./postgres.ts";

export type SchemaVersion = "3.5" | "4.3" | "4.6" | "main";
export const SCHEMA_VERSIONS: readonly SchemaVersion[] = ["3.5", "4.3", "4.6", "main"];

/** Returns whether `version` has `user_roles.require_2fa`. */
export function hasRequire2fa(version: SchemaVersion): boolean {
  return version === "4.6" || version === "main";
}

/** The password most test accounts share. */
export const PASSWORD = new TextDecoder().decode(fixture("ascii").password);

/** Role the program connects as, with SELECT on the tables it reads only. */
export const READER_ROLE = "auth_mastodon";
export const READER_PASSWORD = "db-Secret-4f9a2c";

/** Access tokens, 43 URL-safe base64 characters like Doorkeeper's. */
export const TOKENS = {
  totpValid: "tok3nTotpValidAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
  totpRevoked: "tok3nTotpRevokedAAAAAAAAAAAAAAAAAAAAAAAAAA",
  totpRevokedLater: "tok3nTotpRevokedLaterAAAAAAAAAAAAAAAAAAAAA",
  totpExpired: "tok3nTotpExpiredAAAAAAAAAAAAAAAAAAAAAAAAAA",
  totpExpiresLater: "tok3nTotpExpiresLaterAAAAAAAAAAAAAAAAAAAAA",
  aliceValid: "tok3nAliceValidAAAAAAAAAAAAAAAAAAAAAAAAAAA",
  appOnly: "tok3nAppOnlyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
  suspendedValid: "tok3nSuspendedValidAAAAAAAAAAAAAAAAAAAAAAA",
  roleTwoFactorValid: "tok3nRoleTwoFactorAAAAAAAAAAAAAAAAAAAAAAAA",
};

/** Returns every secret the tests use, for the search of logs and outputs. */
export function allSecrets(): string[] {
  const passwords = fixtureNames().map((name) => fixture(name).password);
  const texts = passwords.map((bytes) => new TextDecoder().decode(bytes));
  return [...new Set([...texts, ...Object.values(TOKENS), READER_PASSWORD, "wrong-Password-77"])];
}

function tableSql(version: SchemaVersion): string {
  const roles = version !== "3.5";
  return `
CREATE TABLE accounts (
  id bigint PRIMARY KEY,
  username character varying DEFAULT ''::character varying NOT NULL,
  domain character varying,
  display_name character varying DEFAULT ''::character varying NOT NULL,
  suspended_at timestamp without time zone,
  silenced_at timestamp without time zone,
  memorial boolean DEFAULT false NOT NULL,
  moved_to_account_id bigint,
  actor_type character varying,
  created_at timestamp without time zone DEFAULT now() NOT NULL,
  updated_at timestamp without time zone DEFAULT now() NOT NULL
  ${version === "main" ? ", requested_deletion_at timestamp without time zone" : ""}
);
CREATE UNIQUE INDEX index_accounts_on_username_and_domain_lower
  ON accounts (lower((username)::text), COALESCE(lower((domain)::text), ''::text));
${
    roles
      ? `CREATE TABLE user_roles (
  id bigserial PRIMARY KEY,
  name character varying DEFAULT ''::character varying NOT NULL,
  permissions bigint DEFAULT 0 NOT NULL
  ${hasRequire2fa(version) ? ", require_2fa boolean DEFAULT false NOT NULL" : ""}
);
INSERT INTO user_roles (id, name) VALUES (-99, '');`
      : ""
  }
CREATE TABLE users (
  id bigserial PRIMARY KEY,
  email character varying DEFAULT ''::character varying NOT NULL,
  encrypted_password character varying DEFAULT ''::character varying NOT NULL,
  confirmed_at timestamp without time zone,
  approved boolean DEFAULT true NOT NULL,
  disabled boolean DEFAULT false NOT NULL,
  otp_required_for_login boolean DEFAULT false NOT NULL,
  otp_secret character varying,
  account_id bigint NOT NULL REFERENCES accounts (id),
  created_at timestamp without time zone DEFAULT now() NOT NULL,
  updated_at timestamp without time zone DEFAULT now() NOT NULL
  ${roles ? ", role_id bigint" : ""}
);
CREATE UNIQUE INDEX index_users_on_email ON users (email);
CREATE INDEX index_users_on_account_id ON users (account_id);
CREATE TABLE webauthn_credentials (
  id bigserial PRIMARY KEY,
  external_id character varying NOT NULL,
  public_key character varying NOT NULL,
  nickname character varying NOT NULL,
  sign_count bigint DEFAULT 0 NOT NULL,
  user_id bigint REFERENCES users (id)
);
CREATE TABLE oauth_applications (
  id bigserial PRIMARY KEY,
  name character varying NOT NULL,
  uid character varying NOT NULL,
  secret character varying NOT NULL,
  owner_id bigint,
  owner_type character varying
);
CREATE TABLE oauth_access_tokens (
  id bigserial PRIMARY KEY,
  token character varying NOT NULL,
  refresh_token character varying,
  expires_in integer,
  revoked_at timestamp without time zone,
  created_at timestamp without time zone NOT NULL,
  scopes character varying,
  application_id bigint REFERENCES oauth_applications (id),
  resource_owner_id bigint REFERENCES users (id),
  last_used_at timestamp without time zone,
  last_used_ip inet
);
CREATE UNIQUE INDEX index_oauth_access_tokens_on_token ON oauth_access_tokens (token);
CREATE INDEX index_oauth_access_tokens_on_resource_owner_id
  ON oauth_access_tokens (resource_owner_id);
CREATE TABLE statuses (id bigserial PRIMARY KEY, text text DEFAULT '' NOT NULL);
`;
}

/** An account row and, unless `user` is false, its users row. */
interface AccountSpec {
  id: number;
  username: string;
  domain?: string;
  suspended?: boolean;
  memorial?: boolean;
  movedTo?: number;
  deletionRequested?: boolean;
  actorType?: string;
  user?: false | {
    hash?: string;
    confirmed?: boolean;
    approved?: boolean;
    disabled?: boolean;
    otp?: boolean;
    webauthn?: boolean;
    roleId?: number;
  };
}

/** Test accounts; `version` leaves out what that schema cannot express. */
export function accountSpecs(version: SchemaVersion): AccountSpec[] {
  const ascii = fixture("ascii").hash;
  const specs: AccountSpec[] = [
    { id: 1, username: "alice", user: { hash: ascii } },
    { id: 2, username: "bob", user: { hash: fixture("ascii_b").hash } },
    { id: 3, username: "carol", user: { hash: fixture("ascii_y").hash } },
    { id: 4, username: "multibyte", user: { hash: fixture("multibyte").hash } },
    { id: 5, username: "long", user: { hash: fixture("long").hash } },
    { id: 6, username: "colons", user: { hash: fixture("colons").hash } },
    { id: 7, username: "binary", user: { hash: fixture("invalid_utf8").hash } },
    { id: 8, username: "MixedCase", user: { hash: ascii } },
    { id: 10, username: "unconfirmed", user: { hash: ascii, confirmed: false } },
    { id: 11, username: "pending", user: { hash: ascii, approved: false } },
    { id: 12, username: "disabled", user: { hash: ascii, disabled: true } },
    { id: 13, username: "suspended", suspended: true, user: { hash: ascii } },
    { id: 14, username: "memorial", memorial: true, user: { hash: ascii } },
    { id: 15, username: "moved", movedTo: 1, user: { hash: ascii } },
    { id: 16, username: "totp", user: { hash: ascii, otp: true } },
    { id: 17, username: "webauthn", user: { hash: ascii, webauthn: true } },
    { id: 18, username: "external", user: { hash: "" } },
    // Self-deleted: the users row is gone and the account row is kept.
    version === "main"
      ? { id: 19, username: "selfdeleted", deletionRequested: true, user: false }
      : { id: 19, username: "selfdeleted", suspended: true, user: false },
    { id: -99, username: "mastodon.internal", actorType: "Application", user: false },
    // Remote accounts: one with a local twin, one with no local account.
    { id: 30, username: "alice", domain: "remote.example", user: false },
    { id: 31, username: "remoteonly", domain: "remote.example", user: false },
  ];
  if (version === "main") {
    specs.push({ id: 20, username: "deleting", deletionRequested: true, user: { hash: ascii } });
  }
  if (version !== "3.5") {
    specs.push(
      { id: 21, username: "rolenotwofactor", user: { hash: ascii, roleId: 5 } },
      { id: 22, username: "roletotp", user: { hash: ascii, roleId: 5, otp: true } },
    );
  }
  return specs;
}

function literal(value: string | undefined): string {
  return value === undefined ? "NULL" : `'${value.replaceAll("'", "''")}'`;
}

function seedSql(version: SchemaVersion): string {
  const statements: string[] = [];
  if (version !== "3.5") {
    const require2fa = hasRequire2fa(version);
    statements.push(
      `INSERT INTO user_roles (id, name, permissions${require2fa ? ", require_2fa" : ""})
       VALUES (5, 'Moderator', 1${require2fa ? ", true" : ""});`,
    );
  }
  for (const spec of accountSpecs(version)) {
    const deletion = version === "main" ? ", requested_deletion_at" : "";
    let deletionValue = "";
    if (version === "main") deletionValue = spec.deletionRequested ? ", now()" : ", NULL";
    statements.push(
      `INSERT INTO accounts (id, username, domain, suspended_at, memorial, moved_to_account_id, actor_type${deletion})
       VALUES (${spec.id}, ${literal(spec.username)}, ${literal(spec.domain)},
               ${spec.suspended ? "now()" : "NULL"}, ${spec.memorial ?? false},
               ${spec.movedTo ?? "NULL"}, ${literal(spec.actorType ?? "Person")}${deletionValue});`,
    );
    if (spec.user === false || spec.user === undefined) continue;
    const user = spec.user;
    const role = version === "3.5" ? "" : ", role_id";
    const roleValue = version === "3.5" ? "" : `, ${user.roleId ?? "NULL"}`;
    statements.push(
      `INSERT INTO users (id, email, encrypted_password, confirmed_at, approved, disabled,
                          otp_required_for_login, account_id${role})
       VALUES (${spec.id}, '${spec.username.toLowerCase()}@mail.example', ${literal(user.hash)},
               ${user.confirmed === false ? "NULL" : "now()"}, ${user.approved ?? true},
               ${user.disabled ?? false}, ${user.otp ?? false}, ${spec.id}${roleValue});`,
    );
    if (user.webauthn) {
      statements.push(
        `INSERT INTO webauthn_credentials (external_id, public_key, nickname, user_id)
         VALUES ('ext-${spec.id}', 'key', 'security key', ${spec.id});`,
      );
    }
  }

  statements.push(
    `INSERT INTO oauth_applications (id, name, uid, secret, owner_id, owner_type)
     VALUES (1, 'XMPP', 'uid', 'secret', 16, 'User');`,
  );
  const token = (value: string, owner: number | null, extra = "") =>
    `INSERT INTO oauth_access_tokens (token, resource_owner_id, application_id, scopes, created_at,
       revoked_at, expires_in)
     VALUES ('${value}', ${owner}, 1, 'read', ${extra || "now() AT TIME ZONE 'UTC', NULL, NULL"});`;
  statements.push(
    token(TOKENS.totpValid, 16),
    token(
      TOKENS.totpRevoked,
      16,
      "now() AT TIME ZONE 'UTC' - interval '1 day', now() AT TIME ZONE 'UTC' - interval '1 hour', NULL",
    ),
    token(
      TOKENS.totpRevokedLater,
      16,
      "now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' + interval '1 hour', NULL",
    ),
    token(TOKENS.totpExpired, 16, "now() AT TIME ZONE 'UTC' - interval '2 hours', NULL, 3600"),
    token(TOKENS.totpExpiresLater, 16, "now() AT TIME ZONE 'UTC', NULL, 3600"),
    token(TOKENS.aliceValid, 1),
    token(TOKENS.appOnly, null),
    token(TOKENS.suspendedValid, 13),
  );
  if (version !== "3.5") statements.push(token(TOKENS.roleTwoFactorValid, 21));
  return statements.join("\n");
}

/** Tables the program reads, which the reader role may SELECT. */
export function tablesRead(version: SchemaVersion): string[] {
  const tables = ["accounts", "users", "webauthn_credentials", "oauth_access_tokens"];
  return version === "3.5" ? tables : [...tables, "user_roles"];
}

/**
 * Creates database `name` with the tables of `version`, the test accounts,
 * and the reader role (once per cluster) with SELECT on the tables read.
 */
export async function createMastodonDatabase(
  cluster: TestCluster,
  name: string,
  version: SchemaVersion,
): Promise<void> {
  await cluster.createDatabase(name);
  await cluster.sql(tableSql(version), name);
  await cluster.sql(seedSql(version), name);
  await cluster.sql(
    `DO $$ BEGIN
       IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${READER_ROLE}') THEN
         CREATE ROLE ${READER_ROLE} LOGIN PASSWORD '${READER_PASSWORD}';
       END IF;
     END $$;
     REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
     GRANT SELECT ON ${tablesRead(version).join(", ")} TO ${READER_ROLE};`,
    name,
  );
}

/**
 * Writes a configuration file for the reader role and returns its path. The
 * host is the cluster's TCP address unless `sections.host` names another.
 */
export async function writeConfig(
  folder: string,
  cluster: TestCluster,
  database: string,
  sections: {
    host?: string;
    database?: string;
    xmpp?: string;
    auth?: string;
    log?: string;
    file?: string;
  } = {},
): Promise<string> {
  const path = `${folder}/${sections.file ?? "auth-mastodon.ini"}`;
  await Deno.writeTextFile(
    path,
    `[database]
host = ${sections.host ?? cluster.hostname}
port = ${cluster.port}
name = ${database}
user = ${READER_ROLE}
password = ${READER_PASSWORD}
${sections.database ?? ""}

[xmpp]
domains = ${sections.xmpp ?? "example.org"}

[auth]
${sections.auth ?? ""}

[log]
${sections.log ?? "level = debug"}
`,
    { mode: 0o600 },
  );
  return path;
}
