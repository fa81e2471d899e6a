/**
 * A private PgBouncer for tests, in front of a {@link TestCluster} over TCP.
 *
 * Each instance has its own temporary folder under /tmp with `pgbouncer.ini`, the auth file,
 * the log file and the pid file. It listens on 127.0.0.1 only, on a free port, with Unix
 * sockets turned off. Clients log in with SCRAM-SHA-256 against the auth file, which contains
 * plain-text passwords, so PgBouncer can log in to PostgreSQL with SCRAM as the same role.
 * `ignore_startup_parameters` stays empty (the default), so a client that sends a startup
 * parameter PgBouncer does not track is rejected.
 *
 * PgBouncer refuses to run as root, so as root it runs as the `postgres` user through
 * `runuser`, and its folder belongs to that user. The admin console is reached with `psql`.
 * Tested with PgBouncer 1.18 (Debian 12's `pgbouncer` package) and psql 15.
 *
 * @module
 */

import type { TestCluster } from "./postgres.ts";

/** Loopback address that PgBouncer listens on. */
const LOOPBACK_HOSTNAME = "127.0.0.1";

/** OS user that runs PgBouncer when the tests run as root. */
const PGBOUNCER_OS_USER = "postgres";

/** Folders searched for the `pgbouncer` binary after PATH. Debian installs it in /usr/sbin. */
const EXTRA_BINARY_FOLDERS = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"];

/** Name of the admin console's virtual database. */
const ADMIN_DATABASE = "pgbouncer";

/** Role that may use the admin console. It exists in PgBouncer's auth file only. */
const ADMIN_USER = "pgbouncer_admin";

const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const POLL_INTERVAL_MS = 50;

/** Maximum time in ms that one admin console command may take before psql is killed. */
const PSQL_TIMEOUT_MS = 30_000;

/** Number of PgBouncer log lines that error messages include. */
const LOG_TAIL_LINES = 30;

/** PgBouncer's pooling modes, as written in `pool_mode`. */
export type PoolMode = "session" | "transaction" | "statement";

/** Options for {@link TestPgBouncer.start}. */
export interface TestPgBouncerOptions {
  /** Database name, the same in PgBouncer and in the cluster. */
  database: string;
  /** Role that clients log in as, and that PgBouncer logs in to the cluster as. */
  user: string;
  /** Password of `user` in the cluster. */
  password: string;
  /** `pool_mode`; "transaction" unless given. */
  poolMode?: PoolMode;
  /** `default_pool_size`: server connections per database and user; 3 unless given. */
  poolSize?: number;
  /**
   * `server_round_robin`: hand out idle server connections in turn instead of the most
   * recently used one first, so that one client's consecutive transactions land on different
   * server connections. False unless given.
   */
  serverRoundRobin?: boolean;
}

/** One row of an admin console `SHOW` command, by column name. */
export type AdminRow = Record<string, string>;

/** Numeric user and group id of an OS user. */
interface OsUserIds {
  uid: number;
  gid: number;
}

let cachedBinary: string | null | undefined;

/** Returns the path of the `pgbouncer` binary, or undefined when it is not installed. */
export function findPgBouncer(): string | undefined {
  if (cachedBinary === undefined) {
    const pathFolders = (Deno.env.get("PATH") ?? "").split(":").filter((folder) => folder !== "");
    const folders = [...new Set([...pathFolders, ...EXTRA_BINARY_FOLDERS])];
    cachedBinary = folders.map((folder) => `${folder}/pgbouncer`).find(isFile) ?? null;
  }
  return cachedBinary ?? undefined;
}

/** Reports whether PgBouncer and psql are installed, so that tests can be skipped without them. */
export function pgbouncerInstalled(): boolean {
  return findPgBouncer() !== undefined && commandExists("psql");
}

/**
 * A PgBouncer process that this class started, with its own configuration.
 *
 * NOTE: a test process that exits without `stop()` leaves PgBouncer running. Its pid is in
 * `pgbouncer.pid` in the folder that `folder` names.
 */
export class TestPgBouncer implements AsyncDisposable {
  /** Address that PgBouncer listens on: always 127.0.0.1. */
  readonly hostname = LOOPBACK_HOSTNAME;

  /** TCP port on 127.0.0.1. */
  readonly port: number;

  /** Temporary folder with the configuration, auth file, log and pid file. */
  readonly folder: string;

  readonly #options: TestPgBouncerOptions;
  readonly #logFile: string;
  readonly #pidFile: string;
  readonly #adminPassword: string;
  readonly #child: Deno.ChildProcess;
  readonly #status: Promise<Deno.CommandStatus>;
  #stderr = "";
  readonly #stderrDone: Promise<void>;
  #exited = false;
  #stopPromise: Promise<void> | null = null;

  private constructor(
    folder: string,
    port: number,
    options: TestPgBouncerOptions,
    adminPassword: string,
    child: Deno.ChildProcess,
  ) {
    this.#options = options;
    this.folder = folder;
    this.port = port;
    this.#logFile = `${folder}/pgbouncer.log`;
    this.#pidFile = `${folder}/pgbouncer.pid`;
    this.#adminPassword = adminPassword;
    this.#child = child;
    this.#status = child.status.then((status) => {
      this.#exited = true;
      return status;
    });
    this.#stderrDone = this.#collectStderr();
  }

  /**
   * Writes the configuration and auth file into a new folder under /tmp, starts PgBouncer in
   * the foreground and waits until it accepts TCP connections. On failure PgBouncer is
   * stopped, the folder is removed, and the error contains PgBouncer's stderr and log tail.
   */
  static async start(cluster: TestCluster, options: TestPgBouncerOptions): Promise<TestPgBouncer> {
    const binary = findPgBouncer();
    if (binary === undefined) {
      throw new Error(
        `pgbouncer not found in PATH or ${EXTRA_BINARY_FOLDERS.join(", ")}: ` +
          "apt-get install -y pgbouncer",
      );
    }
    const owner = Deno.uid() === 0 ? await lookUpOsUser(PGBOUNCER_OS_USER) : null;
    const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: "auth-mastodon-pgbouncer-" });
    const adminPassword = randomHex(24);
    // NOTE: another process can take the port between this probe and PgBouncer's start. The
    // start then fails with "bind(): Address already in use" in the log.
    const port = findFreePort();

    try {
      const configFile = `${folder}/pgbouncer.ini`;
      const authFile = `${folder}/userlist.txt`;
      await Deno.writeTextFile(
        configFile,
        pgbouncerIni({ cluster, options, folder, port, authFile }),
        { mode: 0o600 },
      );
      await Deno.writeTextFile(
        authFile,
        `${quoteAuthField(options.user)} ${quoteAuthField(options.password)}\n` +
          `${quoteAuthField(ADMIN_USER)} ${quoteAuthField(adminPassword)}\n`,
        { mode: 0o600 },
      );
      if (owner !== null) {
        for (const path of [folder, configFile, authFile]) {
          await Deno.chown(path, owner.uid, owner.gid);
        }
      }

      const [command, args] = owner === null
        ? [binary, [configFile]]
        : ["runuser", ["-u", PGBOUNCER_OS_USER, "--", binary, configFile]];
      const child = new Deno.Command(command, {
        args,
        clearEnv: true,
        env: { PATH: Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const bouncer = new TestPgBouncer(folder, port, options, adminPassword, child);
      try {
        await bouncer.#waitUntilListening();
      } catch (error) {
        await bouncer.stop().catch(() => {});
        throw error;
      }
      return bouncer;
    } catch (error) {
      await Deno.remove(folder, { recursive: true }).catch(() => {});
      throw error;
    }
  }

  /**
   * Runs one command on the admin console through psql and returns its rows. Commands
   * without a result, such as RECONNECT, return no rows. Throws with psql's stderr when the
   * command fails.
   */
  async admin(command: string): Promise<AdminRow[]> {
    const output = await this.#psql(ADMIN_DATABASE, ADMIN_USER, this.#adminPassword, command);
    return parseUnalignedRows(output);
  }

  /**
   * Runs one SQL statement through PgBouncer, as the pooled role on the pooled database, and
   * returns its rows. Throws with psql's stderr when the statement fails.
   */
  async sql(text: string): Promise<AdminRow[]> {
    const { database, user, password } = this.#options;
    return parseUnalignedRows(await this.#psql(database, user, password, text));
  }

  /** Runs `command` with psql -c and returns its unaligned output with a header line. */
  async #psql(database: string, user: string, password: string, command: string) {
    const abortController = new AbortController();
    const timeoutId = setTimeout(() => abortController.abort(), PSQL_TIMEOUT_MS);
    try {
      const output = await new Deno.Command("psql", {
        args: [
          "-X",
          "-A",
          "-F",
          "\t",
          "-P",
          "footer=off",
          "-h",
          this.hostname,
          "-p",
          String(this.port),
          "-U",
          user,
          "-d",
          database,
          "-c",
          command,
        ],
        // A clean environment keeps PGOPTIONS, PGSSLMODE and the like of the caller out.
        clearEnv: true,
        env: {
          PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
          PGPASSWORD: password,
          // This PgBouncer offers no TLS to clients, so psql need not ask for it.
          PGSSLMODE: "disable",
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: abortController.signal,
      }).output();
      if (abortController.signal.aborted) {
        throw new Error(`psql timed out after ${PSQL_TIMEOUT_MS} ms on "${command}"`);
      }
      if (!output.success) {
        const stderr = new TextDecoder().decode(output.stderr).trim();
        throw new Error(
          `psql "${command}" on PgBouncer's database "${database}" failed with exit code ` +
            `${output.code}: ${stderr}\n${await this.#formatLogTail()}`,
        );
      }
      return new TextDecoder().decode(output.stdout);
    } finally {
      clearTimeout(timeoutId);
    }
  }

  /** Returns PgBouncer's log file so far. */
  async logText(): Promise<string> {
    return await Deno.readTextFile(this.#logFile).catch(() => "");
  }

  /**
   * Stops PgBouncer with SIGTERM (immediate shutdown) and removes the folder. After 5 s
   * without an exit it sends SIGKILL. Later calls return the result of the first one.
   */
  stop(): Promise<void> {
    this.#stopPromise ??= this.#stopOnce();
    return this.#stopPromise;
  }

  /** Calls `stop()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  async #stopOnce(): Promise<void> {
    try {
      if (!this.#exited) {
        // runuser stays the parent of PgBouncer. Sent SIGTERM, runuser (util-linux 2.38)
        // forwards it but then waits 2 s before it exits, so PgBouncer is signalled directly.
        this.#signalPgBouncer("SIGTERM");
        if (!await this.#waitForExit(STOP_TIMEOUT_MS)) {
          this.#signalPgBouncer("SIGKILL");
          if (!await this.#waitForExit(STOP_TIMEOUT_MS)) this.#child.kill("SIGKILL");
        }
      }
      await this.#status;
      await this.#stderrDone;
    } finally {
      await Deno.remove(this.folder, { recursive: true });
    }
  }

  /**
   * Sends `signal` to the PgBouncer process: the child itself when it runs directly, or the
   * pid in the pid file when that process is runuser's child. Falls back to the child.
   */
  #signalPgBouncer(signal: Deno.Signal): void {
    const pid = this.#readPgBouncerPid();
    try {
      if (pid === undefined) {
        this.#child.kill(signal);
      } else {
        Deno.kill(pid, signal);
      }
    } catch (error) {
      // The process exited in the meantime.
      if (!(error instanceof Deno.errors.NotFound || error instanceof TypeError)) throw error;
    }
  }

  /** Returns the pid from the pid file if that process is a child of the started process. */
  #readPgBouncerPid(): number | undefined {
    let pid: number;
    try {
      pid = Number.parseInt(Deno.readTextFileSync(this.#pidFile).trim(), 10);
    } catch {
      return undefined;
    }
    if (pid === this.#child.pid) return pid;
    return parentPid(pid) === this.#child.pid ? pid : undefined;
  }

  async #waitForExit(timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const exited = await Promise.race([this.#status.then(() => true), timedOut]);
    clearTimeout(timer);
    return exited;
  }

  async #waitUntilListening(): Promise<void> {
    const deadline = performance.now() + START_TIMEOUT_MS;
    while (performance.now() < deadline) {
      if (this.#exited) {
        const status = await this.#status;
        await this.#stderrDone;
        throw new Error(
          `pgbouncer exited during start-up with exit code ${status.code}: ` +
            `${this.#stderr.trim()}\n${await this.#formatLogTail()}`,
        );
      }
      try {
        const connection = await Deno.connect({ hostname: this.hostname, port: this.port });
        connection.close();
        return;
      } catch (error) {
        if (!(error instanceof Deno.errors.ConnectionRefused)) throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    }
    throw new Error(
      `pgbouncer did not listen on ${this.hostname}:${this.port} within ${START_TIMEOUT_MS} ms: ` +
        `${this.#stderr.trim()}\n${await this.#formatLogTail()}`,
    );
  }

  async #collectStderr(): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of this.#child.stderr) this.#stderr += decoder.decode(chunk);
  }

  async #formatLogTail(): Promise<string> {
    const text = await this.logText();
    const lines = text.trimEnd().split("\n").slice(-LOG_TAIL_LINES);
    return `Last lines of the PgBouncer log ${this.#logFile}:\n${lines.join("\n")}`;
  }
}

/** Returns the text of pgbouncer.ini. */
function pgbouncerIni(
  { cluster, options, folder, port, authFile }: {
    cluster: TestCluster;
    options: TestPgBouncerOptions;
    folder: string;
    port: number;
    authFile: string;
  },
): string {
  const database = options.database;
  return `[databases]
${database} = host=${cluster.hostname} port=${cluster.port} dbname=${database}

[pgbouncer]
listen_addr = ${LOOPBACK_HOSTNAME}
listen_port = ${port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = ${authFile}
admin_users = ${ADMIN_USER}
pool_mode = ${options.poolMode ?? "transaction"}
default_pool_size = ${options.poolSize ?? 3}
server_round_robin = ${options.serverRoundRobin ? 1 : 0}
max_client_conn = 100
logfile = ${folder}/pgbouncer.log
pidfile = ${folder}/pgbouncer.pid
`;
}

/** Quotes a field of PgBouncer's auth file: double quotes, with `"` doubled. */
function quoteAuthField(value: string): string {
  return `"${value.replaceAll('"', '""')}"`;
}

/**
 * Parses psql's unaligned output with tab-separated fields, a header line and no footer.
 * Values containing a tab or line break would be split wrongly, and SHOW output has none.
 */
function parseUnalignedRows(text: string): AdminRow[] {
  const lines = text.split("\n").filter((line) => line !== "");
  if (lines.length === 0) return [];
  const header = lines[0].split("\t");
  return lines.slice(1).map((line) => {
    const values = line.split("\t");
    return Object.fromEntries(header.map((name, index) => [name, values[index] ?? ""]));
  });
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
      return false;
    }
    throw error;
  }
}

function commandExists(name: string): boolean {
  const folders = (Deno.env.get("PATH") ?? "").split(":").filter((folder) => folder !== "");
  return folders.some((folder) => isFile(`${folder}/${name}`));
}

/** Returns the parent pid from /proc/PID/stat, or undefined when the process is gone. */
function parentPid(pid: number): number | undefined {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // The command name in parentheses may contain spaces and ")", so fields are counted from
  // the last ")": state, then the parent pid.
  const fieldsAfterName = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number.parseInt(fieldsAfterName[1], 10);
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
function findFreePort(): number {
  const listener = Deno.listen({ hostname: LOOPBACK_HOSTNAME, port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** Looks up the numeric user and group id of an OS user with `id`. */
async function lookUpOsUser(name: string): Promise<OsUserIds> {
  const read = async (flag: string) => {
    const output = await new Deno.Command("id", { args: [flag, name] }).output();
    if (!output.success) {
      throw new Error(
        `id ${flag} ${name} failed: ${new TextDecoder().decode(output.stderr).trim()}`,
      );
    }
    return Number.parseInt(new TextDecoder().decode(output.stdout), 10);
  };
  return { uid: await read("-u"), gid: await read("-g") };
}

function randomHex(byteCount: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(byteCount));
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}
