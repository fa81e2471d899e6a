/**
 * The configuration file: every value is read as text, validated, and
 * converted by one accessor that names the key in its error.
 *
 * @module
 */

import { IniDocument, IniSyntaxError, parseIni } from "./ini.ts";

/** Configuration file read when no `-c PATH` is given. */
export const DEFAULT_CONFIG_PATH = "/etc/ejabberd/auth-mastodon.ini";

/** Directory of PostgreSQL's Unix socket on Debian and Ubuntu. */
export const DEFAULT_SOCKET_DIRECTORY = "/var/run/postgresql";

/**
 * Largest accepted `query_timeout`. ejabberd waits 30 seconds for a reply
 * and then restarts the program, so a reply must come well before that.
 */
export const MAX_TIMEOUT_SECONDS = 25;

export type LogLevel = "error" | "warn" | "info" | "debug";
export const LOG_LEVELS: readonly LogLevel[] = ["error", "warn", "info", "debug"];

export type SslMode = "disable" | "prefer" | "require" | "verify-ca" | "verify-full";
export const SSL_MODES: readonly SslMode[] = [
  "disable",
  "prefer",
  "require",
  "verify-ca",
  "verify-full",
];

/** One PostgreSQL server address: a TCP host or a Unix socket directory. */
export type DatabaseHost =
  | { kind: "tcp"; hostname: string; port: number }
  | { kind: "socket"; directory: string; port: number };

export interface DatabaseConfig {
  /** Addresses tried in order. */
  hosts: DatabaseHost[];
  name: string;
  user: string;
  /** The password, read from `password` or `password_file`; never logged. */
  password: string | undefined;
  passwordFile: string | undefined;
  sslMode: SslMode;
  /** Path of the CA certificates file for `verify-ca` and `verify-full`. */
  sslRootCertFile: string | undefined;
  /** PEM text of `sslRootCertFile`, read when the configuration is loaded. */
  sslRootCert: string | undefined;
  connectTimeoutSeconds: number;
  queryTimeoutSeconds: number;
  /** False for PgBouncer in transaction mode before PgBouncer 1.21. */
  preparedStatements: boolean;
}

export interface AuthConfig {
  twoFactorPassword: boolean;
  accessTokens: boolean;
  movedAccounts: boolean;
  /** Seconds a verified password stays cached; 0 turns the cache off. */
  cacheTtlSeconds: number;
  cacheMaxEntries: number;
}

export interface LogConfig {
  /** Log file path, or `undefined` for stderr. */
  file: string | undefined;
  level: LogLevel;
}

export interface Config {
  /** Path the configuration was read from. */
  path: string;
  database: DatabaseConfig;
  /** Lowercase XMPP domains served; empty means every domain. */
  domains: string[];
  auth: AuthConfig;
  log: LogConfig;
  /** Problems that do not stop the program, such as a password file other users can read. */
  warnings: string[];
}

/** An invalid or unreadable configuration file. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Accepted keys by section, with the accepted forms shown in errors. */
const KEYS: Record<string, Record<string, string>> = {
  database: {
    host: "a comma-separated list of host names, IP addresses or Unix socket directories",
    port: "a port number from 1 to 65535, or one per host separated by commas",
    name: "a database name",
    user: "a role name",
    password: "the role's password",
    password_file: "the path of a file containing the role's password",
    sslmode: `one of ${SSL_MODES.map((mode) => `"${mode}"`).join(", ")}`,
    sslrootcert: "the path of a PEM file of CA certificates",
    connect_timeout: `a number of seconds from 0.1 to ${MAX_TIMEOUT_SECONDS}`,
    query_timeout: `a number of seconds from 0.1 to ${MAX_TIMEOUT_SECONDS}`,
    prepared_statements: `"yes" or "no"`,
  },
  xmpp: {
    domains: "a comma-separated list of XMPP domains",
  },
  auth: {
    two_factor_password: `"yes" or "no"`,
    access_tokens: `"yes" or "no"`,
    moved_accounts: `"yes" or "no"`,
    cache_ttl: "a whole number of seconds, 0 to turn the cache off",
    cache_max_entries: "a whole number from 1 to 1000000",
  },
  log: {
    file: "the path of a log file, or empty for stderr",
    level: `one of ${LOG_LEVELS.map((level) => `"${level}"`).join(", ")}`,
  },
};

/** Keys whose values are never shown in messages. */
const SECRET_KEYS = new Set(["database.password"]);

const TRUE_WORDS = new Set(["yes", "true", "on", "1"]);
const FALSE_WORDS = new Set(["no", "false", "off", "0"]);

/** Reads and validates the configuration file. Throws {@linkcode ConfigError}. */
export async function loadConfig(path: string): Promise<Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new ConfigError(`Cannot read config "${path}": ${describeFileError(error)}`);
  }
  return await parseConfig(text, path);
}

/**
 * Validates configuration text read from `path`. Relative file paths in it
 * are resolved against the directory of `path`.
 */
export async function parseConfig(text: string, path: string): Promise<Config> {
  let document: IniDocument;
  try {
    document = parseIni(text);
  } catch (error) {
    if (error instanceof IniSyntaxError) {
      throw new ConfigError(`Cannot read config "${path}": line ${error.line}: ${error.message}`);
    }
    throw error;
  }
  const reader = new ConfigReader(document, path);
  reader.rejectUnknownKeys();

  const warnings: string[] = [];
  const database = await readDatabase(reader, warnings);
  const domains = reader.list("xmpp", "domains").map((domain) => reader.checkDomain(domain));

  const auth: AuthConfig = {
    twoFactorPassword: reader.boolean("auth", "two_factor_password", false),
    accessTokens: reader.boolean("auth", "access_tokens", true),
    movedAccounts: reader.boolean("auth", "moved_accounts", false),
    cacheTtlSeconds: reader.integer("auth", "cache_ttl", 900, 0, 86_400),
    cacheMaxEntries: reader.integer("auth", "cache_max_entries", 10_000, 1, 1_000_000),
  };
  const logFile = reader.text("log", "file", "");
  const log: LogConfig = {
    file: logFile === "" ? undefined : reader.resolvePath(logFile),
    level: reader.choice("log", "level", LOG_LEVELS, "info"),
  };

  return { path, database, domains, auth, log, warnings };
}

async function readDatabase(reader: ConfigReader, warnings: string[]): Promise<DatabaseConfig> {
  const hostNames = reader.list("database", "host");
  if (hostNames.length === 0) hostNames.push(DEFAULT_SOCKET_DIRECTORY);
  const ports = reader.ports(hostNames.length);
  const hosts: DatabaseHost[] = hostNames.map((name, index) =>
    reader.checkHost(name, ports[index])
  );

  const passwordText = reader.optionalText("database", "password");
  const passwordFileText = reader.optionalText("database", "password_file");
  let password = passwordText;
  let passwordFile: string | undefined;
  if (passwordText !== undefined && passwordFileText !== undefined) {
    throw reader.error(
      `keys "database.password" and "database.password_file" are both set: keep one of them`,
    );
  }
  if (passwordFileText !== undefined) {
    passwordFile = reader.resolvePath(passwordFileText);
    password = await readPasswordFile(reader, passwordFile);
    const warning = await otherUsersCanRead(passwordFile);
    if (warning) {
      warnings.push(
        `password file "${passwordFile}" is readable by other users: run chmod o-rwx "${passwordFile}"`,
      );
    }
  } else if (passwordText !== undefined && await otherUsersCanRead(reader.path)) {
    warnings.push(
      `config "${reader.path}" contains database.password and is readable by other users: ` +
        `run chmod o-rwx "${reader.path}"`,
    );
  }

  const sslMode = reader.choice("database", "sslmode", SSL_MODES, "prefer");
  const rootCertText = reader.optionalText("database", "sslrootcert");
  let sslRootCertFile: string | undefined;
  let sslRootCert: string | undefined;
  if (rootCertText !== undefined) {
    if (sslMode !== "verify-ca" && sslMode !== "verify-full") {
      throw reader.error(
        `key "database.sslrootcert" is only used with sslmode "verify-ca" or "verify-full", ` +
          `but sslmode is "${sslMode}": set sslmode = verify-full`,
      );
    }
    sslRootCertFile = reader.resolvePath(rootCertText);
    sslRootCert = await readRootCert(reader, sslRootCertFile);
  }

  return {
    hosts,
    name: reader.text("database", "name", "mastodon_production"),
    user: reader.text("database", "user", "auth_mastodon"),
    password,
    passwordFile,
    sslMode,
    sslRootCertFile,
    sslRootCert,
    connectTimeoutSeconds: reader.seconds("database", "connect_timeout", 5),
    queryTimeoutSeconds: reader.seconds("database", "query_timeout", 5),
    preparedStatements: reader.boolean("database", "prepared_statements", true),
  };
}

/** Reads a file named by `key`; a failure is a {@linkcode ConfigError} naming the key. */
async function readReferencedFile(reader: ConfigReader, key: string, path: string) {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw reader.error(`key "${key}": cannot read "${path}": ${describeFileError(error)}`);
  }
}

async function readPasswordFile(reader: ConfigReader, path: string): Promise<string> {
  const text = await readReferencedFile(reader, "database.password_file", path);
  // One trailing line break is part of the file format, not of the password.
  const password = text.replace(/\r?\n$/, "");
  if (password === "") {
    throw reader.error(`key "database.password_file": "${path}" is empty`);
  }
  return password;
}

async function readRootCert(reader: ConfigReader, path: string): Promise<string> {
  const text = await readReferencedFile(reader, "database.sslrootcert", path);
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw reader.error(
      `key "database.sslrootcert": "${path}" contains no PEM certificate ` +
        `("-----BEGIN CERTIFICATE-----")`,
    );
  }
  return text;
}

/** Returns true when users outside the file's owner and group may read it. */
async function otherUsersCanRead(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return info.mode !== null && (info.mode & 0o004) !== 0;
  } catch {
    return false;
  }
}

/** Returns a short reason for a failed file read, with the fix where one is known. */
export function describeFileError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "the file does not exist";
  if (error instanceof Deno.errors.PermissionDenied) {
    return "permission denied: the file must be readable by the user running auth-mastodon";
  }
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory, not a file";
  if (error instanceof Deno.errors.NotCapable) {
    return "auth-mastodon may not read files below /dev, /proc or /sys: move the file elsewhere";
  }
  if (error instanceof TypeError && /invalid utf-8|decode/i.test(error.message)) {
    return "the file is not valid UTF-8 text";
  }
  return error instanceof Error ? error.message : String(error);
}

/** Typed access to the INI document; every error names the file, key, value and accepted form. */
class ConfigReader {
  readonly #document: IniDocument;
  readonly path: string;

  constructor(document: IniDocument, path: string) {
    this.#document = document;
    this.path = path;
  }

  error(detail: string): ConfigError {
    return new ConfigError(`Invalid config "${this.path}": ${detail}`);
  }

  rejectUnknownKeys(): void {
    for (const [section, entries] of this.#document) {
      const known = KEYS[section];
      if (known === undefined) {
        const sections = Object.keys(KEYS).map((name) => `[${name}]`).join(", ");
        throw this.error(`unknown section [${section}]: the sections are ${sections}`);
      }
      for (const key of entries.keys()) {
        if (!(key in known)) {
          const keys = Object.keys(known).join(", ");
          throw this.error(`unknown key "${section}.${key}": the keys of [${section}] are ${keys}`);
        }
      }
    }
  }

  optionalText(section: string, key: string): string | undefined {
    const value = this.#document.get(section)?.get(key)?.value;
    return value === undefined || value === "" ? undefined : value;
  }

  text(section: string, key: string, fallback: string): string {
    return this.optionalText(section, key) ?? fallback;
  }

  /** Comma-separated values, trimmed, without empty items. */
  list(section: string, key: string): string[] {
    const value = this.optionalText(section, key);
    if (value === undefined) return [];
    return value.split(",").map((item) => item.trim()).filter((item) => item !== "");
  }

  invalid(section: string, key: string, value: string): ConfigError {
    const line = this.#document.get(section)?.get(key)?.line;
    const where = line === undefined ? "" : ` (line ${line})`;
    // Secrets are never echoed back, whatever their validation result.
    const quotedValue = SECRET_KEYS.has(`${section}.${key}`) ? "(hidden)" : `"${value}"`;
    return this.error(
      `key "${section}.${key}"${where} must be ${KEYS[section][key]}, got ${quotedValue}`,
    );
  }

  boolean(section: string, key: string, fallback: boolean): boolean {
    const value = this.optionalText(section, key);
    if (value === undefined) return fallback;
    const word = value.toLowerCase();
    if (TRUE_WORDS.has(word)) return true;
    if (FALSE_WORDS.has(word)) return false;
    throw this.invalid(section, key, value);
  }

  choice<T extends string>(section: string, key: string, choices: readonly T[], fallback: T): T {
    const value = this.optionalText(section, key);
    if (value === undefined) return fallback;
    const word = value.toLowerCase() as T;
    if (choices.includes(word)) return word;
    throw this.invalid(section, key, value);
  }

  integer(section: string, key: string, fallback: number, min: number, max: number): number {
    const value = this.optionalText(section, key);
    if (value === undefined) return fallback;
    const number = /^\d+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(number) || number < min || number > max) {
      throw this.invalid(section, key, value);
    }
    return number;
  }

  seconds(section: string, key: string, fallback: number): number {
    const value = this.optionalText(section, key);
    if (value === undefined) return fallback;
    const number = /^\d+(\.\d+)?$/.test(value) ? Number(value) : NaN;
    if (!(number >= 0.1 && number <= MAX_TIMEOUT_SECONDS)) throw this.invalid(section, key, value);
    return number;
  }

  ports(hostCount: number): number[] {
    const values = this.list("database", "port");
    if (values.length === 0) return new Array(hostCount).fill(5432);
    const ports = values.map((value) => {
      const port = /^\d+$/.test(value) ? Number(value) : NaN;
      if (!(port >= 1 && port <= 65535)) {
        throw this.invalid("database", "port", this.text("database", "port", ""));
      }
      return port;
    });
    if (ports.length === 1) return new Array(hostCount).fill(ports[0]);
    if (ports.length !== hostCount) {
      throw this.error(
        `key "database.port" lists ${ports.length} ports for ${hostCount} hosts: ` +
          `give one port for all hosts or one per host`,
      );
    }
    return ports;
  }

  checkHost(name: string, port: number): DatabaseHost {
    if (/\s/.test(name)) throw this.invalid("database", "host", name);
    if (name.startsWith("/")) return { kind: "socket", directory: name, port };
    // An IPv6 address may be written in brackets, as in a URL.
    const hostname = name.startsWith("[") && name.endsWith("]") ? name.slice(1, -1) : name;
    if (!/^[A-Za-z0-9._:%-]+$/.test(hostname)) throw this.invalid("database", "host", name);
    return { kind: "tcp", hostname, port };
  }

  checkDomain(domain: string): string {
    if (/[\s@/:\\]/.test(domain) || domain.startsWith(".") || domain.endsWith(".")) {
      throw this.invalid("xmpp", "domains", domain);
    }
    return domain.toLowerCase();
  }

  resolvePath(path: string): string {
    if (path.startsWith("/")) return path;
    const slash = this.path.lastIndexOf("/");
    return slash === -1 ? path : `${this.path.slice(0, slash + 1)}${path}`;
  }
}
