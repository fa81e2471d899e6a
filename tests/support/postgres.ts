/**
 * Throwaway PostgreSQL clusters for tests, one per test file.
 *
 * Each cluster lives in its own temporary folder: the data directory, the Unix socket folder,
 * the server log and, with TLS, the test certificates. The folder is in /dev/shm when that is a
 * tmpfs with room to spare and TMPDIR is unset, and in the system temporary folder otherwise.
 * The server listens on 127.0.0.1 only.
 * It needs the PostgreSQL server binaries (`initdb`, `pg_ctl`) and `psql` on PATH, and
 * `openssl` for TLS. initdb refuses to run as root, so as root the server commands run as
 * the `postgres` user through `runuser`. `terminateBackends` needs PostgreSQL 14 or later and
 * TLS needs OpenSSL 3.0 or later. Tested with PostgreSQL 15 and OpenSSL 3.0 on Debian 12.
 *
 * @module
 */

import { statfs } from "node:fs/promises";

/** Loopback address that every test cluster listens on. */
const LOOPBACK_HOSTNAME = "127.0.0.1";

/** Name of the superuser that initdb creates. */
const SUPERUSER = "postgres";

/** OS user that runs the server commands when the tests run as root. */
const SERVER_OS_USER = "postgres";

/** Shared memory folder for the clusters, used when it is a large enough tmpfs. */
const SHM_DIR = "/dev/shm";

/** Minimum free space in bytes in /dev/shm to put a cluster there. A new cluster takes about 40 MB. */
const SHM_MIN_AVAILABLE_BYTES = 512 * 1024 * 1024;

/** File system type that statfs(2) returns for tmpfs (TMPFS_MAGIC in linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;

/** Number of server log lines that error messages include. */
const LOG_TAIL_LINES = 30;

/** Maximum time in ms that one `sql()` call may take before psql is killed. */
const PSQL_TIMEOUT_MS = 30_000;

/** Milliseconds that `terminateBackends` lets each backend take to exit. */
const TERMINATE_TIMEOUT_MS = 5_000;

/**
 * Client authentication rules. The local superuser needs no password, so `sql()` works without
 * one. Every other login must pass SCRAM-SHA-256.
 */
const PG_HBA_CONF = `# TYPE  DATABASE  USER      ADDRESS       METHOD
local   all       ${SUPERUSER}                  trust
local   all       all                     scram-sha-256
host    all       all       127.0.0.1/32  scram-sha-256
host    all       all       ::1/128       scram-sha-256
`;

/** Options for {@link TestCluster.start}. */
export interface TestClusterOptions {
  /** Enables TLS with a server certificate signed by a test CA made for this cluster. */
  ssl?: boolean;
}

/**
 * Shutdown mode of `pg_ctl stop`. "fast" disconnects clients and shuts down cleanly.
 * "immediate" aborts every server process, so the next start runs crash recovery.
 */
export type StopMode = "fast" | "immediate";

/** Paths of the files that `createTlsFiles` writes. */
interface TlsFiles {
  caCertFile: string;
  otherCaCertFile: string;
  serverCertFile: string;
  serverKeyFile: string;
}

/** Exit status and decoded output of a finished command. */
interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Numeric user and group id of an OS user. */
interface OsUserIds {
  uid: number;
  gid: number;
}

/**
 * A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 and on a Unix socket.
 *
 * The superuser `postgres` logs in over the Unix socket without a password. TCP logins always
 * need a password, so tests create their own roles with `sql()`.
 *
 * NOTE: a test process that exits without `destroy()` leaves the server running and its folder
 * in place. Stop such a server with `pg_ctl stop -m immediate -D FOLDER/data`.
 */
export class TestCluster implements AsyncDisposable {
  /** Address that the server listens on: always 127.0.0.1. */
  readonly hostname = LOOPBACK_HOSTNAME;

  /** TCP port on 127.0.0.1. It stays the same across `stop()`, `start()` and `restart()`. */
  readonly port: number;

  /**
   * Folder that contains the server's Unix socket, for `host=` in libpq and `-h` in psql.
   * It is always in the system temporary folder, because Deno requires --allow-all to
   * connect to a socket below /dev, and the program under test runs with narrower permissions.
   */
  readonly socketDir: string;

  /** PostgreSQL data directory (PGDATA). */
  readonly dataDir: string;

  /** Random password of the superuser `postgres`, for superuser logins over TCP. */
  readonly superuserPassword: string;

  readonly #rootDir: string;
  readonly #logFile: string;
  readonly #serverOwner: OsUserIds | null;
  #tlsFiles: TlsFiles | null = null;
  #running = false;
  #frozenPids: number[] = [];
  #destroyPromise: Promise<void> | null = null;

  private constructor(
    rootDir: string,
    socketDir: string,
    port: number,
    serverOwner: OsUserIds | null,
  ) {
    this.#rootDir = rootDir;
    this.#logFile = `${rootDir}/server.log`;
    this.#serverOwner = serverOwner;
    this.port = port;
    this.socketDir = socketDir;
    this.dataDir = `${rootDir}/data`;
    this.superuserPassword = randomHex(24);
  }

  /**
   * Creates a cluster in a new temporary folder with initdb and starts it.
   *
   * With `ssl: true`, openssl first writes a test CA, a server certificate signed by it for
   * `localhost` and `127.0.0.1`, and a second, unrelated CA into the folder. On failure the
   * folder is removed, and the error contains the output of the failed command and, once the
   * server was started, the server log tail.
   *
   * Starting took 0.45 s to 1.5 s in /dev/shm and 0.7 s to 2.0 s on the ext4 disk, with or
   * without TLS, mostly for initdb. These are runs of five starts each on a shared 2-core
   * Debian 12 machine, where the load of other jobs caused most of the spread.
   */
  static async start(options: TestClusterOptions = {}): Promise<TestCluster> {
    const serverOwner = Deno.uid() === 0 ? await lookUpOsUser(SERVER_OS_USER) : null;
    const rootDir = await Deno.makeTempDir({
      dir: await findFastTempDir(),
      prefix: "auth-mastodon-pg-",
    });
    const socketDir = await Deno.makeTempDir({ prefix: "auth-mastodon-pg-socket-" });
    await Deno.chmod(socketDir, 0o700);
    if (serverOwner !== null) {
      await Deno.chown(rootDir, serverOwner.uid, serverOwner.gid);
      await Deno.chown(socketDir, serverOwner.uid, serverOwner.gid);
    }

    // NOTE: another process can take the port between this probe and the server start. The
    // start then fails with "could not bind" in the server log.
    const cluster = new TestCluster(rootDir, socketDir, findFreePort(), serverOwner);
    try {
      await cluster.#initialize(options.ssl ?? false);
      await cluster.start();
    } catch (error) {
      await cluster.destroy().catch(() => {});
      throw error;
    }
    return cluster;
  }

  /** CA certificate that signed the server certificate. Throws unless started with `ssl: true`. */
  get caCertFile(): string {
    return this.#requireTlsFiles().caCertFile;
  }

  /**
   * Certificate of a second CA that signed nothing on this server, for tests where
   * certificate verification must fail. Throws unless started with `ssl: true`.
   */
  get otherCaCertFile(): string {
    return this.#requireTlsFiles().otherCaCertFile;
  }

  /**
   * Runs an SQL script as the superuser through psql over the Unix socket and returns psql's
   * output: unaligned, tuples only, one row per line, fields separated by `|`.
   *
   * The script goes to psql on stdin, so it may contain several statements. The first failing
   * statement stops the script and makes this throw an Error with psql's stderr. psql is
   * killed after 30 s, which also ends a call on a frozen server.
   */
  async sql(text: string, database = "postgres"): Promise<string> {
    this.#assertNotDestroyed();
    const abortController = new AbortController();
    const timeoutId = setTimeout(() => abortController.abort(), PSQL_TIMEOUT_MS);
    try {
      const child = new Deno.Command("psql", {
        args: [
          "-X",
          "-q",
          "-v",
          "ON_ERROR_STOP=1",
          "-At",
          "-h",
          this.socketDir,
          "-p",
          String(this.port),
          "-U",
          SUPERUSER,
          "-d",
          database,
          "-f",
          "-",
        ],
        // A clean environment keeps PGOPTIONS, PGSSLMODE and the like of the caller out.
        clearEnv: true,
        env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        signal: abortController.signal,
      }).spawn();

      // Collect the output while writing stdin, so that a large result cannot fill the stdout
      // pipe and block psql before it has read the whole script.
      const outputPromise = child.output();
      const writer = child.stdin.getWriter();
      try {
        await writer.write(new TextEncoder().encode(text));
        await writer.close();
      } catch {
        // psql exited before reading the whole script, so its stderr below explains why.
      }
      const output = await outputPromise;

      if (abortController.signal.aborted) {
        throw new Error(
          `psql timed out after ${PSQL_TIMEOUT_MS} ms on database "${database}" ` +
            `(is the server frozen?).\n${await this.#formatLogTail()}`,
        );
      }
      if (!output.success) {
        const stderr = new TextDecoder().decode(output.stderr).trim();
        // psql exits with 3 when a statement fails under ON_ERROR_STOP, which its stderr
        // explains. Other failures, such as a failed connection (exit code 2), add the log tail.
        const logTail = output.code === 3 ? "" : `\n${await this.#formatLogTail()}`;
        throw new Error(
          `psql failed on database "${database}" with exit code ${output.code}: ${stderr}${logTail}`,
        );
      }
      return new TextDecoder().decode(output.stdout);
    } finally {
      clearTimeout(timeoutId);
    }
  }

  /** Creates a database owned by the superuser. */
  async createDatabase(name: string): Promise<void> {
    await this.sql(`CREATE DATABASE ${quoteIdentifier(name)}`);
  }

  /**
   * Stops the server with `pg_ctl stop -w` and waits until it has exited. Thaws a frozen
   * server first. Does nothing when the server is already stopped.
   */
  async stop(mode: StopMode = "fast"): Promise<void> {
    this.#assertNotDestroyed();
    await this.#stopServer(mode);
  }

  /**
   * Starts the server with `pg_ctl start -w` and waits until it accepts connections. The port
   * and folders stay the same as before `stop()`. Throws if the server is already running.
   */
  async start(): Promise<void> {
    this.#assertNotDestroyed();
    if (this.#running) {
      throw new Error(`The test cluster in ${this.dataDir} is already running.`);
    }
    await this.#runPgCtl(["start", "-w", "-D", this.dataDir, "-l", this.#logFile]);
    this.#running = true;
  }

  /**
   * Restarts the server with `pg_ctl restart -m fast -w`, which disconnects every client.
   * Thaws a frozen server first, and starts a stopped one.
   */
  async restart(): Promise<void> {
    this.#assertNotDestroyed();
    this.thaw();
    await this.#runPgCtl([
      "restart",
      "-m",
      "fast",
      "-w",
      "-D",
      this.dataDir,
      "-l",
      this.#logFile,
    ]);
    this.#running = true;
  }

  /**
   * Stops the postmaster and all of its child processes with SIGSTOP.
   *
   * The kernel still completes TCP handshakes on the listening socket, but the server never
   * responds, which looks like a hung host to a client. Open connections hang as well.
   * Call `thaw()` to resume.
   */
  freeze(): void {
    this.#assertNotDestroyed();
    if (!this.#running) {
      throw new Error(
        `Cannot freeze the test cluster in ${this.dataDir} because it is not running. ` +
          "Call start() first.",
      );
    }

    // Stop the postmaster first, so that it cannot fork a child after the list below was read.
    const postmasterPid = this.#readPostmasterPid();
    Deno.kill(postmasterPid, "SIGSTOP");
    const frozenPids = [postmasterPid];
    for (const childPid of listChildPids(postmasterPid)) {
      if (signalIfAlive(childPid, "SIGSTOP")) {
        frozenPids.push(childPid);
      }
    }
    this.#frozenPids = [...new Set([...this.#frozenPids, ...frozenPids])];
  }

  /** Resumes the processes stopped by `freeze()` with SIGCONT. Does nothing when not frozen. */
  thaw(): void {
    // Resume the children before the postmaster, so that the postmaster never runs while
    // they are still stopped.
    for (const pid of this.#frozenPids.toReversed()) {
      signalIfAlive(pid, "SIGCONT");
    }
    this.#frozenPids = [];
  }

  /**
   * Terminates every backend connected to `database` except the one running this query, waits
   * up to 5 s for each to exit, and returns how many exited. A backend still running after
   * 5 s is not counted.
   */
  async terminateBackends(database: string): Promise<number> {
    const output = await this.sql(
      `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, ${TERMINATE_TIMEOUT_MS}))
       FROM pg_stat_activity
       WHERE datname = ${quoteLiteral(database)} AND pid <> pg_backend_pid()`,
    );
    return Number.parseInt(output.trim(), 10);
  }

  /**
   * Thaws and stops the server in immediate mode and removes the temporary folder.
   * Later calls return the result of the first one.
   */
  destroy(): Promise<void> {
    this.#destroyPromise ??= this.#destroyOnce();
    return this.#destroyPromise;
  }

  /** Calls `destroy()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy();
  }

  async #destroyOnce(): Promise<void> {
    let stopError: unknown = null;
    try {
      await this.#stopServer("immediate");
    } catch (error) {
      // Kill what is left, so that no server keeps running on a removed data directory.
      stopError = error;
      this.#killServerProcesses();
    }
    await Deno.remove(this.#rootDir, { recursive: true });
    await Deno.remove(this.socketDir, { recursive: true });
    if (stopError !== null) {
      throw stopError;
    }
  }

  async #initialize(ssl: boolean): Promise<void> {
    // initdb -A scram-sha-256 requires a superuser password, and reads it from a file.
    const passwordFile = `${this.#rootDir}/superuser-password`;
    await Deno.writeTextFile(passwordFile, `${this.superuserPassword}\n`, { mode: 0o600 });
    await this.#chownToServerOwner(passwordFile);
    const initdbResult = await this.#runAsServerOwner("initdb", [
      "-N",
      "-A",
      "scram-sha-256",
      "-U",
      SUPERUSER,
      `--pwfile=${passwordFile}`,
      "-E",
      "UTF8",
      "--locale=C",
      "-D",
      this.dataDir,
    ]);
    await Deno.remove(passwordFile);
    if (initdbResult.code !== 0) {
      throw new Error(
        `initdb failed for ${this.dataDir} with exit code ${initdbResult.code}: ` +
          initdbResult.stderr.trim(),
      );
    }

    // Writing to the existing files keeps their owner, the server's OS user.
    await Deno.writeTextFile(`${this.dataDir}/pg_hba.conf`, PG_HBA_CONF);
    const settings: Record<string, string | number> = {
      listen_addresses: LOOPBACK_HOSTNAME,
      port: this.port,
      unix_socket_directories: this.socketDir,
      // Durability is not needed for throwaway data, and fsync slows every commit.
      fsync: "off",
      password_encryption: "scram-sha-256",
      log_connections: "on",
    };
    if (ssl) {
      this.#tlsFiles = await this.#createTlsFiles();
      settings.ssl = "on";
      settings.ssl_cert_file = this.#tlsFiles.serverCertFile;
      settings.ssl_key_file = this.#tlsFiles.serverKeyFile;
    }
    const settingLines = Object.entries(settings).map(([name, value]) =>
      `${name} = ${typeof value === "number" ? value : quoteConfigString(value)}`
    );
    await Deno.writeTextFile(
      `${this.dataDir}/postgresql.conf`,
      `\n# Settings of the test cluster\n${settingLines.join("\n")}\n`,
      { append: true },
    );
  }

  /**
   * Writes a test CA, a server certificate and key signed by it, and a second, unrelated CA.
   * The server certificate is valid for DNS:localhost and IP:127.0.0.1 for 2 days.
   */
  async #createTlsFiles(): Promise<TlsFiles> {
    const tlsDir = `${this.#rootDir}/tls`;
    await Deno.mkdir(tlsDir, { mode: 0o700 });
    await this.#chownToServerOwner(tlsDir);
    const files: TlsFiles = {
      caCertFile: `${tlsDir}/ca.crt`,
      otherCaCertFile: `${tlsDir}/other-ca.crt`,
      serverCertFile: `${tlsDir}/server.crt`,
      serverKeyFile: `${tlsDir}/server.key`,
    };

    await createCaCertificate(files.caCertFile, `${tlsDir}/ca.key`, "auth-mastodon test CA");
    await createCaCertificate(
      files.otherCaCertFile,
      `${tlsDir}/other-ca.key`,
      "auth-mastodon unrelated test CA",
    );
    await runChecked("openssl", [
      "req",
      "-x509",
      "-CA",
      files.caCertFile,
      "-CAkey",
      `${tlsDir}/ca.key`,
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-noenc",
      "-keyout",
      files.serverKeyFile,
      "-out",
      files.serverCertFile,
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-addext",
      "extendedKeyUsage=serverAuth",
    ]);

    // The server rejects a key file that it owns unless the mode is 0600 or stricter.
    await Deno.chmod(files.serverKeyFile, 0o600);
    await this.#chownToServerOwner(files.serverKeyFile);
    await this.#chownToServerOwner(files.serverCertFile);
    return files;
  }

  async #stopServer(mode: StopMode): Promise<void> {
    this.thaw();
    if (!this.#running) {
      return;
    }
    await this.#runPgCtl(["stop", "-m", mode, "-w", "-D", this.dataDir]);
    this.#running = false;
  }

  /** Sends SIGKILL to the postmaster and its children, ignoring processes that are gone. */
  #killServerProcesses(): void {
    let postmasterPid: number;
    try {
      postmasterPid = this.#readPostmasterPid();
    } catch {
      return;
    }
    signalIfAlive(postmasterPid, "SIGKILL");
    for (const childPid of listChildPids(postmasterPid)) {
      signalIfAlive(childPid, "SIGKILL");
    }
    // A killed postmaster is still stopped if it was frozen, so it must be resumed to exit.
    signalIfAlive(postmasterPid, "SIGCONT");
    this.#running = false;
  }

  /** Reads the postmaster's pid from the first line of postmaster.pid. */
  #readPostmasterPid(): number {
    const pidFile = `${this.dataDir}/postmaster.pid`;
    const firstLine = Deno.readTextFileSync(pidFile).split("\n", 1)[0];
    const pid = Number.parseInt(firstLine, 10);
    if (!Number.isInteger(pid) || pid <= 0) {
      throw new Error(`Invalid postmaster pid "${firstLine}" in ${pidFile}.`);
    }
    return pid;
  }

  async #runPgCtl(args: string[]): Promise<void> {
    const result = await this.#runAsServerOwner("pg_ctl", args);
    if (result.code !== 0) {
      const message = `${result.stderr}\n${result.stdout}`.trim();
      throw new Error(
        `pg_ctl ${args[0]} failed for ${this.dataDir} with exit code ${result.code}: ` +
          `${message}\n${await this.#formatLogTail()}`,
      );
    }
  }

  /** Runs a command as the server's OS user: through runuser as root, directly otherwise. */
  #runAsServerOwner(command: string, args: string[]): Promise<CommandResult> {
    if (this.#serverOwner === null) {
      return runCommand(command, args);
    }
    return runCommand("runuser", ["-u", SERVER_OS_USER, "--", command, ...args]);
  }

  async #chownToServerOwner(path: string): Promise<void> {
    if (this.#serverOwner !== null) {
      await Deno.chown(path, this.#serverOwner.uid, this.#serverOwner.gid);
    }
  }

  async #formatLogTail(): Promise<string> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.#logFile);
    } catch (error) {
      return `Server log ${this.#logFile} could not be read: ${error}`;
    }
    const lines = text.trimEnd().split("\n").slice(-LOG_TAIL_LINES);
    return `Last lines of the server log ${this.#logFile}:\n${lines.join("\n")}`;
  }

  #requireTlsFiles(): TlsFiles {
    if (this.#tlsFiles === null) {
      throw new Error("The test cluster was started without TLS. Pass { ssl: true } to start().");
    }
    return this.#tlsFiles;
  }

  #assertNotDestroyed(): void {
    if (this.#destroyPromise !== null) {
      throw new Error(
        `The test cluster in ${this.#rootDir} was destroyed. Start a new one with ` +
          "TestCluster.start().",
      );
    }
  }
}

/** Writes a self-signed CA certificate and its unencrypted key, valid for 2 days. */
async function createCaCertificate(
  certFile: string,
  keyFile: string,
  commonName: string,
): Promise<void> {
  await runChecked("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-noenc",
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    "2",
    "-subj",
    `/CN=${commonName}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

/**
 * Returns /dev/shm if it is a tmpfs with at least 512 MiB free and TMPDIR is unset, or
 * undefined for the system temporary folder. initdb creates about 1,000 files, which took
 * 0.35 s on tmpfs but 0.5 s to 2.7 s on the ext4 disk of the same Debian 12 machine.
 */
async function findFastTempDir(): Promise<string | undefined> {
  if (Deno.env.get("TMPDIR") !== undefined) {
    return undefined;
  }
  try {
    const stats = await statfs(SHM_DIR);
    const availableBytes = stats.bavail * stats.bsize;
    if (stats.type === TMPFS_MAGIC && availableBytes >= SHM_MIN_AVAILABLE_BYTES) {
      return SHM_DIR;
    }
  } catch (error) {
    if (!(error instanceof Error && "code" in error && error.code === "ENOENT")) {
      throw error;
    }
  }
  return undefined;
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
  const uid = await runChecked("id", ["-u", name]);
  const gid = await runChecked("id", ["-g", name]);
  return { uid: Number.parseInt(uid, 10), gid: Number.parseInt(gid, 10) };
}

/**
 * Lists the pids of the direct children of `parentPid` by reading /proc/PID/stat, whose
 * fourth field is the parent pid.
 */
function listChildPids(parentPid: number): number[] {
  const childPids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) {
      continue;
    }
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        continue; // The process exited after the folder was listed.
      }
      throw error;
    }
    // The second field is the command name in parentheses, which may contain spaces and ")",
    // so the fields after it are counted from the last ")".
    const fieldsAfterName = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number.parseInt(fieldsAfterName[1], 10) === parentPid) {
      childPids.push(Number.parseInt(entry.name, 10));
    }
  }
  return childPids;
}

/** Sends a signal and returns false if the process no longer exists. */
function signalIfAlive(pid: number, signal: Deno.Signal): boolean {
  try {
    Deno.kill(pid, signal);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return false;
    }
    throw error;
  }
}

async function runCommand(command: string, args: string[]): Promise<CommandResult> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(command, { args, stdin: "null" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        `${command} was not found on PATH. Install it, or add its folder to PATH ` +
          "(for initdb and pg_ctl on Debian: /usr/lib/postgresql/VERSION/bin).",
      );
    }
    throw error;
  }
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Runs a command and returns its stdout, or throws an Error with its stderr on failure. */
async function runChecked(command: string, args: string[]): Promise<string> {
  const result = await runCommand(command, args);
  if (result.code !== 0) {
    throw new Error(
      `${command} ${args[0]} failed with exit code ${result.code}: ${result.stderr.trim()}`,
    );
  }
  return result.stdout;
}

function randomHex(byteCount: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(byteCount));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Quotes an SQL identifier, doubling any double quote inside. */
function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * Quotes an SQL string literal, doubling any single quote. Backslashes stay as they are, which
 * is right while standard_conforming_strings is on, the default since PostgreSQL 9.1.
 */
function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** Quotes a postgresql.conf string value, where a backslash starts an escape sequence. */
function quoteConfigString(value: string): string {
  return `'${value.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}
