/**
 * Looking up a local Mastodon account and applying Mastodon's rules for who
 * may use it (`User#functional?` in Mastodon's app/models/user.rb).
 *
 * @module
 */

import type { Database, QueryOptions } from "./database.ts";
import type { SchemaFeatures } from "./schema.ts";

/** Reasons an account may not log in, as written to the log. */
export type AccountBlock =
  | "unknown-user"
  | "deleted"
  | "suspended"
  | "disabled"
  | "memorial"
  | "moved"
  | "unconfirmed"
  | "pending"
  | "two-factor-setup-required";

/** One local account with its login, as read from `accounts` and `users`. */
export interface AccountRow {
  account_id: string;
  suspended: boolean;
  memorial: boolean;
  moved: boolean;
  deletion_requested: boolean;
  /** `users.id`, or null when the account has no login (instance actor, self-deleted). */
  user_id: string | null;
  /** bcrypt hash, `''` for LDAP, PAM and OmniAuth users; null when not selected. */
  encrypted_password: string | null;
  confirmed: boolean | null;
  approved: boolean | null;
  disabled: boolean | null;
  /** TOTP is on, or a security key is registered. */
  two_factor: boolean | null;
  role_requires_two_factor: boolean;
  /**
   * State of the access token of this user that equals the password: usable,
   * revoked or expired. Null when the password is no token of this user.
   */
  token_state: "valid" | "revoked" | "expired" | null;
}

export interface LookupOptions extends QueryOptions {
  /** Also select the password hash. */
  withPassword: boolean;
  /**
   * SHA-256 hex digest of a password that may be an access token. Only the
   * digest is sent, so the password never reaches the server's logs.
   */
  tokenDigest?: string;
}

/** Looks up the local account `username`, case-insensitively. */
export async function findAccount(
  database: Database,
  username: string,
  features: SchemaFeatures,
  options: LookupOptions,
): Promise<AccountRow | undefined> {
  const parameters = options.tokenDigest === undefined
    ? [username]
    : [username, options.tokenDigest];
  const sql = accountQuery(features, {
    withPassword: options.withPassword,
    withToken: options.tokenDigest !== undefined,
  });
  const rows = await database.query<AccountRow>(sql, parameters, options);
  return rows[0];
}

/**
 * Builds the account query for the detected schema. `lower(username)` and
 * `COALESCE(lower(domain), '')` are the expressions of Mastodon's unique
 * index `index_accounts_on_username_and_domain_lower`, so the lookup uses it.
 */
export function accountQuery(
  features: SchemaFeatures,
  options: { withPassword: boolean; withToken: boolean },
): string {
  return `SELECT ${accountColumns(features, options)}
FROM accounts a
LEFT JOIN users u ON u.account_id = a.id
WHERE lower(a.username) = lower($1::text)
  AND COALESCE(lower(a.domain), '') = ''
  AND a.domain IS NULL
ORDER BY u.id
LIMIT 1`;
}

/** Returns the select list of {@linkcode AccountRow}, for tables `accounts a` and `users u`. */
function accountColumns(
  features: SchemaFeatures,
  options: { withPassword: boolean; withToken: boolean },
): string {
  const deletionRequested = features.requestedDeletionAt
    ? "a.requested_deletion_at IS NOT NULL"
    : "false";
  // Mastodon's "Everyone" role has id -99 and applies when users.role_id is NULL.
  const roleRequiresTwoFactor = features.roleRequiresTwoFactor
    ? `COALESCE((SELECT r.require_2fa FROM user_roles r WHERE r.id = COALESCE(u.role_id, -99)), false)`
    : "false";
  // Timestamps are UTC without time zone, so they are compared with UTC now.
  // The token column has a unique index, so at most one row matches.
  const tokenState = options.withToken
    ? `(SELECT CASE
          WHEN t.revoked_at IS NOT NULL AND t.revoked_at <= (now() AT TIME ZONE 'UTC') THEN 'revoked'
          WHEN t.expires_in IS NOT NULL
               AND t.created_at + t.expires_in * interval '1 second' <= (now() AT TIME ZONE 'UTC')
            THEN 'expired'
          ELSE 'valid' END
        FROM oauth_access_tokens t
        WHERE t.resource_owner_id = u.id
          AND encode(sha256(convert_to(t.token, 'UTF8')), 'hex') = $2::text
        LIMIT 1)`
    : "NULL::text";

  return `a.id::text AS account_id,
       a.suspended_at IS NOT NULL AS suspended,
       a.memorial,
       a.moved_to_account_id IS NOT NULL AS moved,
       ${deletionRequested} AS deletion_requested,
       u.id::text AS user_id,
       ${options.withPassword ? "u.encrypted_password" : "NULL::text"} AS encrypted_password,
       u.confirmed_at IS NOT NULL AS confirmed,
       u.approved,
       u.disabled,
       (u.otp_required_for_login
        OR EXISTS (SELECT 1 FROM webauthn_credentials w WHERE w.user_id = u.id)) AS two_factor,
       ${roleRequiresTwoFactor} AS role_requires_two_factor,
       ${tokenState} AS token_state`;
}

/**
 * Builds a query of every local account's username and the state a password
 * login would meet: "ok", a block reason, "external-account",
 * "two-factor-required", or "no-login" for accounts without a `users` row
 * that are not deleted (such as the instance actor). The CASE mirrors
 * {@linkcode accountBlock} rule by rule; a test checks that they agree.
 */
export function accountStatesQuery(
  features: SchemaFeatures,
  options: { movedAccounts: boolean; twoFactorPassword: boolean },
): string {
  return `SELECT username, CASE
    WHEN user_id IS NULL THEN
      CASE WHEN deletion_requested OR suspended THEN 'deleted' ELSE 'no-login' END
    WHEN deletion_requested THEN 'deleted'
    WHEN suspended THEN 'suspended'
    WHEN disabled THEN 'disabled'
    WHEN memorial THEN 'memorial'
    WHEN moved AND NOT ${options.movedAccounts} THEN 'moved'
    WHEN NOT confirmed THEN 'unconfirmed'
    WHEN NOT approved THEN 'pending'
    WHEN role_requires_two_factor AND NOT two_factor THEN 'two-factor-setup-required'
    WHEN encrypted_password = '' THEN 'external-account'
    WHEN two_factor AND NOT ${options.twoFactorPassword} THEN 'two-factor-required'
    ELSE 'ok' END AS state
FROM (SELECT a.username, ${accountColumns(features, { withPassword: true, withToken: false })}
      FROM accounts a
      LEFT JOIN users u ON u.account_id = a.id
      WHERE a.domain IS NULL) AS local_accounts`;
}

/** Counts local accounts by the state {@linkcode accountStatesQuery} gives them. */
export async function countAccountStates(
  database: Database,
  features: SchemaFeatures,
  options: QueryOptions & { movedAccounts: boolean; twoFactorPassword: boolean },
): Promise<Map<string, number>> {
  const rows = await database.query<{ state: string; count: number }>(
    `SELECT state, count(*)::int AS count FROM (${accountStatesQuery(features, options)}) AS states
     GROUP BY state`,
    [],
    options,
  );
  return new Map(rows.map((row) => [row.state, row.count]));
}

/**
 * Returns why the account may not log in at all, whatever the password, or
 * `undefined` when it may. Two-factor rules for passwords are checked by the
 * caller, because access tokens are exempt from them.
 */
export function accountBlock(
  row: AccountRow | undefined,
  options: { movedAccounts: boolean },
): AccountBlock | undefined {
  if (row === undefined) return "unknown-user";
  if (row.user_id === null) {
    // Self-deletion removes the users row and keeps the account row, with
    // suspended_at set (up to 4.6) or requested_deletion_at set (later).
    return row.deletion_requested || row.suspended ? "deleted" : "unknown-user";
  }
  if (row.deletion_requested) return "deleted";
  if (row.suspended) return "suspended";
  if (row.disabled) return "disabled";
  if (row.memorial) return "memorial";
  if (row.moved && !options.movedAccounts) return "moved";
  if (!row.confirmed) return "unconfirmed";
  if (!row.approved) return "pending";
  if (row.role_requires_two_factor && !row.two_factor) return "two-factor-setup-required";
  return undefined;
}
