/**
 * Detection of the Mastodon schema features the login rules depend on, so
 * that one binary works with Mastodon 3.5 through main. Columns are looked up
 * in PostgreSQL's catalog, which every role may read.
 *
 * @module
 */

import type { Database, QueryOptions } from "./database.ts";

/** Optional columns and tables, by the Mastodon version that added them. */
export interface SchemaFeatures {
  /** `users.role_id` and `user_roles`, Mastodon 4.0 and later. */
  userRoles: boolean;
  /** `user_roles.require_2fa`, Mastodon 4.6 and later. */
  roleRequiresTwoFactor: boolean;
  /** `accounts.requested_deletion_at`, Mastodon after 4.6 (main). */
  requestedDeletionAt: boolean;
  /** PostgreSQL 11 or later, which has `sha256()`, needed to look up access tokens. */
  sha256: boolean;
  /** `server_version` as the server reports it. */
  serverVersion: string;
}

/** Columns every supported Mastodon version has, by table. */
export const REQUIRED_COLUMNS: Record<string, readonly string[]> = {
  accounts: ["id", "username", "domain", "suspended_at", "memorial", "moved_to_account_id"],
  users: [
    "id",
    "account_id",
    "encrypted_password",
    "confirmed_at",
    "approved",
    "disabled",
    "otp_required_for_login",
  ],
  webauthn_credentials: ["user_id"],
  oauth_access_tokens: [
    "token",
    "resource_owner_id",
    "revoked_at",
    "expires_in",
    "created_at",
  ],
};

/** Tables read only when they exist. */
export const OPTIONAL_TABLES = ["user_roles"] as const;

/** Every table the program may read, for GRANT statements and privilege checks. */
export const TABLES_READ = [...Object.keys(REQUIRED_COLUMNS), ...OPTIONAL_TABLES];

/** The schema could not be used, with the fix in the message. */
export class SchemaError extends Error {
  /** Tables that exist but the role may not read. */
  readonly missingGrants: string[];

  constructor(message: string, missingGrants: string[] = []) {
    super(message);
    this.name = "SchemaError";
    this.missingGrants = missingGrants;
  }
}

interface CatalogRow {
  table_name: string;
  column_name: string | null;
  can_select: boolean;
}

const CATALOG_QUERY = `
SELECT t.name AS table_name, a.attname AS column_name,
       has_table_privilege(c.oid, 'SELECT') AS can_select
FROM unnest($1::text[]) AS t(name)
JOIN pg_class c ON c.oid = to_regclass(t.name)
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped`;

const VERSION_QUERY = `SELECT current_setting('server_version_num')::int AS number,
  current_setting('server_version') AS version, current_user AS role`;

/**
 * Reads the catalog and returns the features found. Throws
 * {@linkcode SchemaError} naming missing tables, columns or grants.
 */
export async function detectSchema(
  database: Database,
  options: QueryOptions & { accessTokens: boolean },
): Promise<SchemaFeatures> {
  const versionRows = await database.query<{ number: number; version: string; role: string }>(
    VERSION_QUERY,
    [],
    options,
  );
  const rows = await database.query<CatalogRow>(
    CATALOG_QUERY,
    [`{${TABLES_READ.join(",")}}`],
    options,
  );
  const columns = new Map<string, Set<string>>();
  const readable = new Map<string, boolean>();
  for (const row of rows) {
    if (!columns.has(row.table_name)) columns.set(row.table_name, new Set());
    if (row.column_name !== null) columns.get(row.table_name)!.add(row.column_name);
    readable.set(row.table_name, row.can_select);
  }

  const needed = Object.keys(REQUIRED_COLUMNS).filter((table) =>
    options.accessTokens || table !== "oauth_access_tokens"
  );
  const missingTables = needed.filter((table) => !columns.has(table));
  if (missingTables.length > 0) {
    throw new SchemaError(
      `table ${missingTables.join(", ")} not found: database.name must be the Mastodon ` +
        `database, and its tables must be on the role's search_path`,
    );
  }
  const missingColumns = needed.flatMap((table) =>
    REQUIRED_COLUMNS[table].filter((column) => !columns.get(table)!.has(column))
      .map((column) => `${table}.${column}`)
  );
  if (missingColumns.length > 0) {
    throw new SchemaError(
      `column ${missingColumns.join(", ")} not found: this is not a Mastodon 3.5 or later schema`,
    );
  }

  const hasColumn = (table: string, column: string) => columns.get(table)?.has(column) ?? false;
  const features: SchemaFeatures = {
    userRoles: hasColumn("users", "role_id") && columns.has("user_roles"),
    roleRequiresTwoFactor: hasColumn("users", "role_id") &&
      hasColumn("user_roles", "require_2fa"),
    requestedDeletionAt: hasColumn("accounts", "requested_deletion_at"),
    sha256: versionRows[0].number >= 110000,
    serverVersion: versionRows[0].version,
  };

  const used = [...needed, ...(features.roleRequiresTwoFactor ? ["user_roles"] : [])];
  const missingGrants = used.filter((table) => readable.get(table) === false);
  if (missingGrants.length > 0) {
    throw new SchemaError(
      `permission denied for table ${missingGrants.join(", ")}: ` +
        missingGrants.map((table) => grantStatement(table, versionRows[0].role))
          .join(" "),
      missingGrants,
    );
  }
  return features;
}

/** Returns the Mastodon versions whose schema has these features. */
export function impliedVersions(features: SchemaFeatures): string {
  if (features.requestedDeletionAt) return "later than 4.6 (main)";
  if (features.roleRequiresTwoFactor) return "4.6";
  if (features.userRoles) return "4.0 to 4.5";
  return "3.5 to 3.x";
}

/** Returns the features as a short list for the start-up log line. */
export function describeFeatures(features: SchemaFeatures): string {
  const names = [
    features.userRoles ? "user_roles" : undefined,
    features.roleRequiresTwoFactor ? "require_2fa" : undefined,
    features.requestedDeletionAt ? "requested_deletion_at" : undefined,
  ].filter((name) => name !== undefined);
  return `${names.length > 0 ? names.join(",") : "base"} (Mastodon ${
    impliedVersions(features)
  }, PostgreSQL ${features.serverVersion})`;
}

/** Returns `GRANT SELECT ON table TO role;` with the role quoted where SQL needs it. */
export function grantStatement(table: string, role: string): string {
  return `GRANT SELECT ON ${table} TO ${quoteIdentifier(role)};`;
}

/** Quotes an SQL identifier unless it is a plain lowercase name. */
export function quoteIdentifier(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replaceAll('"', '""')}"`;
}
