/**
 * Read-only access to Mastodon's database with a hard deadline per request.
 *
 * Outage behaviour: the protocol has only true and false, so a database that
 * is down, frozen or refusing gives a {@linkcode DatabaseError}, which the
 * caller turns into a false reply and an error log line. The program keeps
 * running and connects again on the next request:
 *
 * - A query that misses its deadline abandons its connection (the socket is
 *   destroyed), so later requests never wait behind a frozen server.
 * - A query whose connection had died (server restarted, backend
 *   terminated, connection dropped) is retried once on a fresh connection.
 * - Connection attempts go through {@linkcode SocketOpener}, which tries the
 *   configured hosts in order.
 *
 * @module
 */

import postgres from "postgres";
import type { DatabaseConfig, DatabaseHost } from "./config.ts";
import { ConnectError, describeHost, SocketOpener } from "./connect.ts";
import { grantStatement, quoteIdentifier } from "./schema.ts";

/** Kind of failure, for the log line and the retry decision. */
export type DatabaseErrorKind =
  | "timeout"
  | "connect"
  | "tls"
  | "connection-lost"
  | "authentication"
  | "privilege"
  | "schema"
  | "query"
  | "closed";

/** A failed database read; the message never contains a password or query parameter. */
export class DatabaseError extends Error {
  readonly kind: DatabaseErrorKind;
  /** SQLSTATE or postgres.js error code, when there is one. */
  readonly code: string | undefined;

  constructor(kind: DatabaseErrorKind, message: string, code?: string) {
    super(message);
    this.name = "DatabaseError";
    this.kind = kind;
    this.code = code;
  }
}

export interface QueryOptions {
  /** `performance.now()` time by which the query must have finished. */
  deadline: number;
  /** Aborts the wait early, as when stdin closes. */
  signal?: AbortSignal;
}

type Row = Record<string, unknown>;

interface Client {
  sql: postgres.Sql;
  opener: SocketOpener;
  /** Deadline of the query that may cause the next connection attempt. */
  deadline: number;
  host: DatabaseHost | undefined;
  tls: boolean;
  /** True once a connection was established, so a later failure means it died. */
  connected: boolean;
}

/** Error codes of postgres.js and Node sockets that mean the connection died. */
const LOST_CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECTION_ENDED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  // admin_shutdown (pg_terminate_backend, fast shutdown), crash_shutdown
  "57P01",
  "57P02",
]);

export interface DatabaseOptions {
  /** `application_name` shown in `pg_stat_activity`. */
  applicationName: string;
  /** Called with "host:port" or the socket path each time a connection opens. */
  onConnect?: (host: string, tls: boolean) => void;
}

/** A pool of one connection (ejabberd sends one request at a time) with deadlines. */
export class Database {
  readonly #config: DatabaseConfig;
  readonly #applicationName: string;
  readonly #onConnect: DatabaseOptions["onConnect"];
  #client: Client | undefined;
  #closed = false;
  #connections = 0;

  constructor(config: DatabaseConfig, options: DatabaseOptions) {
    this.#config = config;
    this.#applicationName = options.applicationName;
    this.#onConnect = options.onConnect;
  }

  /** The host of the current connection and whether it uses TLS, for reports. */
  get connection(): { host: string; tls: boolean } | undefined {
    const client = this.#client;
    if (client?.host === undefined) return undefined;
    return { host: describeHost(client.host), tls: client.tls };
  }

  /** Number of connections opened so far, for tests and reports. */
  get connectionCount(): number {
    return this.#connections;
  }

  /**
   * Runs one read-only query with text parameters and returns its rows.
   * Throws {@linkcode DatabaseError}.
   */
  async query<T = Row>(text: string, parameters: (string | null)[], options: QueryOptions) {
    for (let attempt = 1;; attempt++) {
      if (this.#closed) throw new DatabaseError("closed", "the database connection is closed");
      const client = this.#client ??= this.#createClient();
      const wasConnected = client.connected;
      client.deadline = options.deadline;
      try {
        const rows = await this.#run(client, text, parameters, options);
        return rows as unknown as T[];
      } catch (error) {
        let failure = toDatabaseError(error, this.#config);
        // A connection that never worked was not lost: it was refused while
        // logging in, as by a pooler that rejects a startup parameter.
        if (failure.kind === "connection-lost" && !wasConnected) {
          failure = new DatabaseError(
            "connect",
            failure.message.replace(/^connection lost: /, "cannot connect: "),
            failure.code,
          );
        }
        if (failure.kind !== "query" && failure.kind !== "privilege" && failure.kind !== "schema") {
          this.#discard(client);
        }
        // A connection that had worked and then died gets one more try on a
        // fresh connection. A failed connection attempt does not, because
        // every host was already tried.
        const retry = failure.kind === "connection-lost" && wasConnected && attempt === 1 &&
          options.deadline - performance.now() > 0 && !options.signal?.aborted;
        if (!retry) throw failure;
      }
    }
  }

  /** Closes every connection at once, without waiting for a frozen server. */
  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client;
    this.#client = undefined;
    if (client !== undefined) await endClient(client);
  }

  async #run(
    client: Client,
    text: string,
    parameters: (string | null)[],
    options: QueryOptions,
  ): Promise<Row[]> {
    const query = client.sql.unsafe(text, parameters, {
      prepare: this.#config.preparedStatements,
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    const limit = new Promise<never>((_, reject) => {
      const remaining = options.deadline - performance.now();
      const timeout = () => {
        const connecting = client.opener.connecting;
        const where = connecting
          ? ` from ${describeHost(connecting)} while connecting`
          : client.host
          ? ` from ${describeHost(client.host)}`
          : "";
        const limit = `query_timeout (${this.#config.queryTimeoutSeconds} s)`;
        reject(new DatabaseError("timeout", `no response within ${limit}${where}`));
      };
      if (remaining <= 0) return timeout();
      timer = setTimeout(timeout, remaining);
      onAbort = () => reject(new DatabaseError("closed", "the request was abandoned"));
      options.signal?.addEventListener("abort", onAbort, { once: true });
    });
    // A query left behind by the deadline rejects later, when its connection
    // is destroyed. Nothing waits for it then, so the rejection is caught here.
    const running = Promise.resolve(query);
    running.catch(() => {});
    try {
      const rows = await Promise.race([running, limit]);
      client.connected = true;
      return rows as unknown as Row[];
    } finally {
      clearTimeout(timer);
      if (onAbort) options.signal?.removeEventListener("abort", onAbort);
    }
  }

  #createClient(): Client {
    const config = this.#config;
    const opener = new SocketOpener(config);
    const first = config.hosts[0];
    const client: Client = {
      opener,
      deadline: 0,
      host: undefined,
      tls: false,
      connected: false,
      sql: undefined as unknown as postgres.Sql,
    };
    // Every option is given, because postgres.js reads environment variables
    // (PGHOST, PGSSLMODE, ...) for the missing ones.
    client.sql = postgres({
      socket: async () => {
        const opened = await opener.open(client.deadline);
        client.host = opened.host;
        client.tls = opened.tls;
        this.#connections++;
        this.#onConnect?.(describeHost(opened.host), opened.tls);
        return opened.socket;
      },
      host: [first.kind === "tcp" ? first.hostname : first.directory],
      port: [first.port],
      database: config.name,
      username: config.user,
      password: config.password ?? "",
      ssl: false,
      sslnegotiation: null,
      max: 1,
      idle_timeout: null,
      max_lifetime: 30 * 60,
      connect_timeout: config.connectTimeoutSeconds,
      max_pipeline: 1,
      backoff: 0,
      keep_alive: 60,
      prepare: config.preparedStatements,
      fetch_types: false,
      debug: false,
      publications: "alltables",
      target_session_attrs: null,
      connection: { application_name: this.#applicationName },
      // postgres.js prints notices to stdout by default, and stdout carries replies only.
      onnotice: () => {},
      onparameter: () => {},
    } as unknown as postgres.Options<Record<string, postgres.PostgresType>>);
    return client;
  }

  #discard(client: Client): void {
    if (this.#client === client) this.#client = undefined;
    endClient(client);
  }
}

async function endClient(client: Client): Promise<void> {
  // Sockets are destroyed first: a graceful end waits for a frozen server.
  client.opener.destroyAll();
  try {
    await client.sql.end({ timeout: 0 });
  } catch {
    // The connection is gone either way.
  }
}

/** Turns anything postgres.js or a socket threw into a {@linkcode DatabaseError}. */
export function toDatabaseError(error: unknown, config: DatabaseConfig): DatabaseError {
  if (error instanceof DatabaseError) return error;
  if (error instanceof ConnectError) {
    return new DatabaseError(error.tls ? "tls" : "connect", `cannot connect: ${error.message}`);
  }
  const { code, message } = error instanceof Error
    ? { code: (error as { code?: string }).code, message: error.message }
    : { code: undefined, message: String(error) };

  if (code !== undefined && (LOST_CONNECTION_CODES.has(code) || code.startsWith("08"))) {
    return new DatabaseError("connection-lost", `connection lost: ${message}`, code);
  }
  switch (code) {
    case "CONNECT_TIMEOUT":
      return new DatabaseError(
        "connect",
        `cannot connect: no answer during login within connect_timeout (${config.connectTimeoutSeconds} s)`,
        code,
      );
    case "28P01":
    case "28000":
      return new DatabaseError(
        "authentication",
        `${message}: check database.user and database.password (or password_file) ` +
          `in the config, and pg_hba.conf on the server`,
        code,
      );
    case "3D000":
      return new DatabaseError(
        "authentication",
        `${message}: database.name must be the Mastodon database (mastodon_production by default)`,
        code,
      );
    case "57P03":
      return new DatabaseError("connect", `cannot connect: ${message}`, code);
    case "53300":
      return new DatabaseError(
        "connect",
        `cannot connect: ${message} (raise max_connections or use PgBouncer)`,
        code,
      );
    case "42501": {
      const table = /relation (\S+)|table (\S+)/.exec(message);
      const name = table?.[1] ?? table?.[2];
      const fix = name
        ? `: run ${grantStatement(name, config.user)}`
        : `: the role ${
          quoteIdentifier(config.user)
        } needs SELECT on the tables auth-mastodon reads`;
      return new DatabaseError("privilege", `${message}${fix}`, code);
    }
    case "42P01":
    case "42703":
      return new DatabaseError(
        "schema",
        `${message}: the database does not look like Mastodon's`,
        code,
      );
  }
  return new DatabaseError("query", code ? `${message} (${code})` : message, code);
}
