/**
 * `auth-mastodon check`: a report for an admin on the configuration, the
 * database connection, the role's privileges, the schema and the accounts.
 *
 * @module
 */

import { countAccountStates } from "./accounts.ts";
import { describeError } from "./authenticator.ts";
import { type Config, ConfigError, loadConfig } from "./config.ts";
import { Database } from "./database.ts";
import {
  describeFeatures,
  detectSchema,
  grantStatement,
  OPTIONAL_TABLES,
  quoteIdentifier,
  REQUIRED_COLUMNS,
  SchemaError,
  type SchemaFeatures,
} from "./schema.ts";
import { VERSION } from "./version.ts";

type Status = "ok" | "warn" | "FAIL" | "info";

/** Account states in the order the report lists them, with the words it uses. */
const STATE_LABELS: [string, string][] = [
  ["unconfirmed", "unconfirmed"],
  ["pending", "pending approval"],
  ["disabled", "disabled"],
  ["suspended", "suspended"],
  ["deleted", "deleted"],
  ["memorial", "memorial"],
  ["moved", "moved"],
  ["two-factor-setup-required", "missing the two-factor setup their role requires"],
  ["external-account", "external (LDAP, PAM or OmniAuth; token only)"],
  ["two-factor-required", "two-factor (token only)"],
];

export interface CheckOptions {
  configPath: string;
  /** Writes one line of the report. */
  print: (line: string) => void;
}

/** Runs every check and returns the exit status: 0 when nothing failed, else 1. */
export async function runCheck(options: CheckOptions): Promise<number> {
  const report = new Report(options.print);
  options.print(`auth-mastodon ${VERSION}: checking ${options.configPath}`);
  options.print("");

  let config: Config;
  try {
    config = await loadConfig(options.configPath);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    report.line("FAIL", error.message);
    return report.finish();
  }
  report.line("ok", "the configuration file is valid");
  for (const warning of config.warnings) report.line("warn", warning);
  if (config.domains.length === 0) {
    report.line(
      "warn",
      "no [xmpp] domains: every XMPP domain is looked up as this instance's accounts; " +
        "set [xmpp] domains to the instance's domains",
    );
  } else {
    report.line("ok", `XMPP domains: ${config.domains.join(", ")}`);
  }

  const database = new Database(config.database, { applicationName: "auth-mastodon check" });
  try {
    await checkDatabase(report, config, database);
  } finally {
    await database.close();
  }
  return report.finish();
}

class Report {
  readonly #print: (line: string) => void;
  failures = 0;
  warnings = 0;

  constructor(print: (line: string) => void) {
    this.#print = print;
  }

  line(status: Status, message: string): void {
    if (status === "FAIL") this.failures++;
    if (status === "warn") this.warnings++;
    this.#print(`  ${status.padEnd(5)} ${message}`);
  }

  finish(): number {
    const warnings = `${this.warnings} warning${this.warnings === 1 ? "" : "s"}`;
    this.#print("");
    if (this.failures === 0) {
      this.#print(`All checks passed, ${warnings}.`);
      return 0;
    }
    this.#print(`${this.failures} check${this.failures === 1 ? "" : "s"} failed, ${warnings}.`);
    return 1;
  }
}

async function checkDatabase(report: Report, config: Config, database: Database): Promise<void> {
  const limits = () => ({
    deadline: performance.now() + config.database.queryTimeoutSeconds * 1000,
  });

  let identity: { role: string; database: string; version: string; superuser: boolean };
  try {
    const rows = await database.query<typeof identity>(
      `SELECT current_user AS role, current_database() AS database,
              current_setting('server_version') AS version,
              (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser`,
      [],
      limits(),
    );
    identity = rows[0];
  } catch (error) {
    report.line("FAIL", `cannot query the database: ${describeError(error)}`);
    return;
  }
  const connection = database.connection;
  const tls = connection?.tls ? `with TLS (sslmode ${config.database.sslMode})` : "without TLS";
  report.line(
    "ok",
    `connected to ${
      connection?.host ?? "?"
    } as ${identity.role}, database ${identity.database}, ${tls}`,
  );
  report.line("ok", `PostgreSQL ${identity.version}`);
  const host = config.database.hosts[0];
  const remote = host.kind === "tcp" && !["127.0.0.1", "::1", "localhost"].includes(host.hostname);
  if (!connection?.tls && remote) {
    report.line(
      "warn",
      "passwords of the database role travel unencrypted to a remote host: " +
        "set sslmode = verify-full and sslrootcert",
    );
  }

  const privilegesOk = await checkPrivileges(report, database, identity, limits());

  let features: SchemaFeatures;
  try {
    features = await detectSchema(database, {
      ...limits(),
      accessTokens: config.auth.accessTokens,
    });
  } catch (error) {
    // Missing grants were reported with their GRANT statements already.
    if (!(error instanceof SchemaError && error.missingGrants.length > 0 && !privilegesOk)) {
      report.line("FAIL", `schema: ${describeError(error)}`);
    }
    return;
  }
  report.line("ok", `schema features: ${describeFeatures(features)}`);
  if (!features.sha256 && config.auth.accessTokens) {
    report.line("warn", "PostgreSQL before 11 has no sha256(), so access tokens are not accepted");
  }

  await checkAccounts(report, config, database, features, limits());
}

/** Reports missing SELECT grants and any write privilege; returns false when a grant is missing. */
async function checkPrivileges(
  report: Report,
  database: Database,
  identity: { role: string; superuser: boolean },
  limits: { deadline: number },
): Promise<boolean> {
  const tables = [...Object.keys(REQUIRED_COLUMNS), ...OPTIONAL_TABLES];
  let rows: { table_name: string; present: boolean; can_select: boolean }[];
  let writable: { table_name: string; privileges: string }[];
  try {
    rows = await database.query(
      `SELECT t.name AS table_name, to_regclass(t.name) IS NOT NULL AS present,
              COALESCE(has_table_privilege(to_regclass(t.name), 'SELECT'), false) AS can_select
       FROM unnest($1::text[]) AS t(name)`,
      [`{${tables.join(",")}}`],
      limits,
    );
    writable = await database.query(
      `SELECT c.oid::regclass::text AS table_name,
              concat_ws(', ',
                CASE WHEN has_table_privilege(c.oid, 'INSERT') THEN 'INSERT' END,
                CASE WHEN has_table_privilege(c.oid, 'UPDATE') THEN 'UPDATE' END,
                CASE WHEN has_table_privilege(c.oid, 'DELETE') THEN 'DELETE' END,
                CASE WHEN has_table_privilege(c.oid, 'TRUNCATE') THEN 'TRUNCATE' END) AS privileges
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind IN ('r', 'p')
         AND n.nspname NOT IN ('pg_catalog', 'information_schema')
         AND n.nspname NOT LIKE 'pg_toast%'
       ORDER BY 1`,
      [],
      limits,
    );
  } catch (error) {
    report.line("FAIL", `cannot read the role's privileges: ${describeError(error)}`);
    return false;
  }

  const missing = rows.filter((row) => row.present && !row.can_select).map((row) => row.table_name);
  const readable = rows.filter((row) => row.can_select).map((row) => row.table_name);
  if (readable.length > 0) report.line("ok", `SELECT on ${readable.join(", ")}`);
  for (const table of missing) {
    report.line("FAIL", `no SELECT on ${table}: run ${grantStatement(table, identity.role)}`);
  }

  if (identity.superuser) {
    report.line(
      "warn",
      `${identity.role} is a superuser and could change any data: ` +
        "use a role with SELECT on the tables above only",
    );
  }
  const changes = writable.filter((row) => row.privileges !== "");
  if (changes.length > 0 && !identity.superuser) {
    const listed = changes.slice(0, 5).map((row) => `${row.table_name} (${row.privileges})`);
    const more = changes.length > 5 ? ` and ${changes.length - 5} more tables` : "";
    report.line(
      "warn",
      `${identity.role} can change data, which auth-mastodon never does: ${
        listed.join(", ")
      }${more}; ` +
        `run REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public FROM ` +
        `${quoteIdentifier(identity.role)};`,
    );
  }
  return missing.length === 0;
}

async function checkAccounts(
  report: Report,
  config: Config,
  database: Database,
  features: SchemaFeatures,
  limits: { deadline: number },
): Promise<void> {
  let states: Map<string, number>;
  try {
    states = await countAccountStates(database, features, {
      ...limits,
      movedAccounts: config.auth.movedAccounts,
      twoFactorPassword: config.auth.twoFactorPassword,
    });
  } catch (error) {
    report.line("FAIL", `cannot count the accounts: ${describeError(error)}`);
    return;
  }
  const usable = states.get("ok") ?? 0;
  report.line("ok", `${usable} local account${usable === 1 ? "" : "s"} can log in with a password`);
  const blocked = STATE_LABELS
    .map(([state, label]) => [states.get(state) ?? 0, label] as const)
    .filter(([count]) => count > 0);
  const total = blocked.reduce((sum, [count]) => sum + count, 0);
  if (total > 0) {
    const parts = blocked.map(([count, label]) => `${count} ${label}`).join(", ");
    report.line("info", `${total} cannot: ${parts}`);
  }
  const withoutLogin = states.get("no-login") ?? 0;
  if (withoutLogin > 0) {
    report.line(
      "info",
      `${withoutLogin} local account${withoutLogin === 1 ? "" : "s"} without a login, ` +
        "such as the instance actor: not XMPP users",
    );
  }
}
