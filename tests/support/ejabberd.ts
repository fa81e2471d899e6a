/**
 * Runs a private ejabberd node that authenticates through an external
 * authentication program, and logs in to it with a real XMPP client
 * (xmpp_login.py, which uses slixmpp).
 *
 * Requirements: root (ejabberd runs as the `ejabberd` user through `su`), the
 * Debian `ejabberd` package and `python3-slixmpp` for /usr/bin/python3. Tested
 * with ejabberd 23.01 and slixmpp 1.8.3 on Debian 12.
 *
 * Each node listens only on 127.0.0.1: one c2s port, and one Erlang distribution
 * port (ERL_DIST_PORT) that `ejabberdctl` connects to directly, so the node
 * never starts epmd. When an epmd is already running, Erlang/OTP 25 still
 * registers the node's name there until the node stops.
 */

import { cp } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const EJABBERD_USER = "ejabberd";
const EJABBERDCTL_CANDIDATES = ["/usr/sbin/ejabberdctl", "/usr/bin/ejabberdctl"];
const CERTIFICATE_SOURCE = "/etc/ejabberd/ejabberd.pem";
const PYTHON = "/usr/bin/python3";
const LOGIN_SCRIPT = fileURLToPath(new URL("./xmpp_login.py", import.meta.url));

// Each `ejabberdctl` call starts a short-lived Erlang VM, which took about a second here.
const CTL_TIMEOUT_MS = 30_000;
const START_TIMEOUT_MS = 60_000;
// A program that blocks while it handles a request gets EOF on stdin only when it reads again.
const STOP_TIMEOUT_MS = 10_000;
const KILL_TIMEOUT_MS = 5_000;
const POLL_INTERVAL_MS = 100;
const DEFAULT_LOGIN_TIMEOUT_SECONDS = 20;
// Extra time for the Python interpreter on top of the client's own timeout,
// so this limit only catches a hung client.
const LOGIN_PROCESS_GRACE_MS = 10_000;
const DENO_CACHE_TIMEOUT_MS = 300_000;

// su passes on the caller's environment apart from HOME, SHELL, USER, LOGNAME
// and PATH. Starting su with only these variables keeps the test runner's
// variables (PGPASSWORD, for example) away from ejabberd and the program it runs.
const CHILD_ENVIRONMENT = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  LANG: "C.UTF-8",
};

const LOGIN_EXIT_SESSION_STARTED = 0;
const LOGIN_EXIT_AUTH_FAILED = 1;

let cachedInstalled: boolean | undefined;

/**
 * Reports whether ejabberdctl exists and /usr/bin/python3 can import slixmpp,
 * so tests can be skipped where they cannot run. The result is cached.
 */
export function ejabberdInstalled(): boolean {
  if (cachedInstalled === undefined) {
    cachedInstalled = findEjabberdctl() !== undefined && pythonHasSlixmpp();
  }
  return cachedInstalled;
}

function findEjabberdctl(): string | undefined {
  return EJABBERDCTL_CANDIDATES.find((path) => isFile(path));
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return false;
    }
    throw error;
  }
}

function pythonHasSlixmpp(): boolean {
  if (!isFile(PYTHON)) {
    return false;
  }
  const result = new Deno.Command(PYTHON, {
    args: ["-c", "import slixmpp"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).outputSync();
  return result.success;
}

/** Options for {@linkcode TestEjabberd.start}. */
export interface TestEjabberdOptions {
  /** XMPP domain served by the node, the only entry of `hosts`. */
  domain: string;
  /**
   * Value of `extauth_program`. ejabberd runs it as `/bin/sh -c "exec PROGRAM"`
   * as the ejabberd user, so it may carry arguments, and environment variables
   * must be set with `env NAME=value program`.
   */
  extauthProgram: string;
}

interface ProcessIdentity {
  pid: number;
  // Start time from /proc/PID/stat, so a reused PID is not mistaken for the same process.
  startTime: string;
}

/**
 * Private ejabberd node with `auth_method: external`, running as the ejabberd
 * user from its own folder in /tmp. Use it with `await using`, or call
 * {@linkcode TestEjabberd.stop}.
 */
export class TestEjabberd {
  /** Port of the c2s listener on 127.0.0.1 (STARTTLS required). */
  readonly c2sPort: number;
  /**
   * Private folder owned by the ejabberd user, which contains the
   * configuration, logs and Mnesia spool. Callers may put files here that the
   * external program reads later. ejabberd starts the program while the node
   * starts, so files it reads at startup belong in a folder prepared before
   * {@linkcode TestEjabberd.start}. {@linkcode TestEjabberd.stop} deletes this
   * folder.
   */
  readonly folder: string;
  /** XMPP domain served by the node. */
  readonly domain: string;
  readonly #ejabberdctl: string;
  readonly #nodeName: string;
  #beamProcess: ProcessIdentity | undefined;
  #stopping: Promise<void> | undefined;
  #logTextAfterStop: string | undefined;

  private constructor(
    folder: string,
    domain: string,
    c2sPort: number,
    ejabberdctl: string,
    nodeName: string,
  ) {
    this.folder = folder;
    this.domain = domain;
    this.c2sPort = c2sPort;
    this.#ejabberdctl = ejabberdctl;
    this.#nodeName = nodeName;
  }

  /**
   * Writes a private configuration, starts the node and waits until
   * `ejabberdctl status` reports it started and the c2s port accepts
   * connections. Throws with the node's logs when it does not start within
   * 60 s.
   */
  static async start(options: TestEjabberdOptions): Promise<TestEjabberd> {
    if (Deno.uid() !== 0) {
      throw new Error(
        "TestEjabberd must run as root, because it starts ejabberd as the ejabberd user with su",
      );
    }
    const ejabberdctl = findEjabberdctl();
    if (ejabberdctl === undefined) {
      throw new Error(
        `ejabberdctl not found in ${
          EJABBERDCTL_CANDIDATES.join(" or ")
        }: install the ejabberd package`,
      );
    }

    // /tmp rather than TMPDIR, because the ejabberd user must be able to reach
    // the folder and TMPDIR may point into a private home directory.
    const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: "auth-mastodon-ejabberd-" });
    const nodeName = `authtest-${crypto.randomUUID().slice(0, 8)}@localhost`;
    const [c2sPort, distributionPort] = findFreePorts(2);
    const server = new TestEjabberd(folder, options.domain, c2sPort, ejabberdctl, nodeName);
    try {
      await server.#writeConfiguration(options.extauthProgram, distributionPort);
      await server.#startNode();
      return server;
    } catch (error) {
      // The node may be half started, so stop whatever runs from this folder.
      const stopFailure = await server.stop().then(
        () => "",
        (stopError) => `\nStopping the node also failed: ${errorMessage(stopError)}`,
      );
      const logs = await server.logText().catch((logError) =>
        `(logs not available: ${errorMessage(logError)})`
      );
      throw new Error(`ejabberd failed to start: ${errorMessage(error)}${stopFailure}\n${logs}`, {
        cause: error,
      });
    }
  }

  async #writeConfiguration(extauthProgram: string, distributionPort: number): Promise<void> {
    await Deno.mkdir(join(this.folder, "logs"));
    await Deno.mkdir(join(this.folder, "db"));
    await Deno.copyFile(CERTIFICATE_SOURCE, join(this.folder, "ejabberd.pem"));
    await Deno.chmod(join(this.folder, "ejabberd.pem"), 0o600);

    // JSON strings are valid YAML double-quoted scalars, which keeps any
    // quotes or backslashes in the program string intact.
    const ejabberdYml = [
      "# Written by tests/support/ejabberd.ts for one test run.",
      "hosts:",
      `  - ${JSON.stringify(this.domain)}`,
      "loglevel: info",
      "log_rotate_count: 0",
      "certfiles:",
      `  - ${JSON.stringify(join(this.folder, "ejabberd.pem"))}`,
      // The certificate does not match the test domain, and ejabberd must not
      // try to fetch one from an ACME server.
      "acme:",
      "  auto: false",
      "listen:",
      "  -",
      `    port: ${this.c2sPort}`,
      '    ip: "127.0.0.1"',
      "    module: ejabberd_c2s",
      "    starttls_required: true",
      "auth_method: external",
      `extauth_program: ${JSON.stringify(extauthProgram)}`,
      "extauth_pool_size: 1",
      "auth_use_cache: false",
      "modules: {}",
      "",
    ].join("\n");
    await Deno.writeTextFile(join(this.folder, "ejabberd.yml"), ejabberdYml);

    // ejabberdctl sources this file as a shell script. ERL_DIST_PORT makes the
    // node listen on a fixed distribution port and skip epmd. It also skips
    // the start check in ejabberdctl 23.01 that may run `epmd -kill`.
    const ejabberdctlCfg = [
      "# Written by tests/support/ejabberd.ts for one test run.",
      `ERLANG_NODE=${shellQuote(this.#nodeName)}`,
      "INET_DIST_INTERFACE=127.0.0.1",
      "ERL_EPMD_ADDRESS=127.0.0.1",
      `ERL_DIST_PORT=${distributionPort}`,
      `EJABBERD_CONFIG_PATH=${shellQuote(join(this.folder, "ejabberd.yml"))}`,
      `EJABBERD_PID_PATH=${shellQuote(this.#pidPath())}`,
      `CONTRIB_MODULES_PATH=${shellQuote(join(this.folder, "contrib-modules"))}`,
      'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"',
      "EJABBERD_BYPASS_WARNINGS=true",
      "",
    ].join("\n");
    await Deno.writeTextFile(join(this.folder, "ejabberdctl.cfg"), ejabberdctlCfg);

    // ejabberdctl points ERL_INETRC at CONFIG_DIR/inetrc. The host entry maps
    // "localhost", the host part of the node name, to 127.0.0.1 without DNS.
    await Deno.writeTextFile(
      join(this.folder, "inetrc"),
      '{lookup, ["file", "native"]}.\n{host, {127,0,0,1}, ["localhost"]}.\n',
    );

    await chownToEjabberd(["-R", this.folder]);
    await Deno.chmod(this.folder, 0o700);
  }

  async #startNode(): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    const startResult = await this.#ctl(["start"]);
    if (!startResult.success) {
      throw new Error(
        `ejabberdctl start exited with code ${startResult.code}: ${startResult.text}`,
      );
    }

    while (true) {
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${START_TIMEOUT_MS / 1000} s waiting for ejabberd`);
      }
      this.#beamProcess ??= await this.#readBeamProcess();
      if (this.#beamProcess !== undefined && !(await isRunning(this.#beamProcess))) {
        throw new Error(`the ejabberd VM (PID ${this.#beamProcess.pid}) exited during startup`);
      }
      if (this.#beamProcess !== undefined && (await isPortOpen(this.c2sPort))) {
        const status = await this.#ctl(["status"]);
        if (status.success) {
          return;
        }
      }
      await delay(POLL_INTERVAL_MS);
    }
  }

  /**
   * Logs in over STARTTLS with SASL PLAIN as `jid`, which must be a bare or
   * full JID of this node's domain. Returns true when the session starts and
   * false when the server rejects the credentials. Throws with the client's
   * output on any other outcome, such as a refused connection or no result
   * within `timeoutSeconds` (default 20). A string password is sent as UTF-8,
   * and a Uint8Array is sent byte for byte.
   *
   * ejabberd 23.01 waits about 30 s for the program's reply before it rejects
   * the login (measured with a stub program that never replies), so a test of
   * such a program needs a longer timeout.
   */
  async login(
    jid: string,
    password: string | Uint8Array,
    options: { timeoutSeconds?: number } = {},
  ): Promise<boolean> {
    const timeoutSeconds = options.timeoutSeconds ?? DEFAULT_LOGIN_TIMEOUT_SECONDS;
    const processTimeoutMs = timeoutSeconds * 1000 + LOGIN_PROCESS_GRACE_MS;
    const passwordBytes = typeof password === "string"
      ? new TextEncoder().encode(password)
      : password;
    const child = new Deno.Command(PYTHON, {
      args: [LOGIN_SCRIPT, jid, String(this.c2sPort), String(timeoutSeconds)],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(processTimeoutMs),
    }).spawn();
    const writer = child.stdin.getWriter();
    try {
      await writer.write(passwordBytes);
      await writer.close();
    } catch (error) {
      // The client exited before it read stdin. Its exit code and output,
      // read below, explain why.
      if (!(error instanceof Deno.errors.BrokenPipe)) {
        throw error;
      }
    }
    const result = await child.output();

    if (result.code === LOGIN_EXIT_SESSION_STARTED) {
      return true;
    }
    if (result.code === LOGIN_EXIT_AUTH_FAILED) {
      return false;
    }
    const output = decodeOutput(result.stdout, result.stderr);
    const reason = result.signal === null
      ? `exited with code ${result.code}`
      : `was ended by ${result.signal} after ${processTimeoutMs / 1000} s`;
    throw new Error(`XMPP login of ${jid} on port ${this.c2sPort} ${reason}: ${output}`);
  }

  /**
   * Returns ejabberd.log and error.log, each under a header line. After
   * {@linkcode TestEjabberd.stop}, returns the text read just before the
   * folder was deleted.
   */
  async logText(): Promise<string> {
    if (this.#logTextAfterStop !== undefined) {
      return this.#logTextAfterStop;
    }
    const sections = [];
    for (const name of ["ejabberd.log", "error.log"]) {
      const path = join(this.folder, "logs", name);
      let text: string;
      try {
        text = await Deno.readTextFile(path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) {
          throw error;
        }
        text = "(file not found)\n";
      }
      sections.push(`==> ${path} <==\n${text}`);
    }
    return sections.join("\n");
  }

  /**
   * Stops the node with `ejabberdctl stop`, waits until the VM and every
   * process it started (including the external program) have exited, and
   * deletes the folder. Processes still running after 10 s get SIGKILL. Calling
   * it again returns the same promise.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stopNode();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #stopNode(): Promise<void> {
    this.#beamProcess ??= await this.#readBeamProcess();
    const processes = await listProcessTrees(await this.#findNodeProcesses());

    if (processes.length > 0) {
      // A failed stop is not fatal, because SIGKILL below ends what still runs.
      await this.#ctl(["stop"]);
    }

    let remaining = await waitForExit(processes, STOP_TIMEOUT_MS);
    for (const process of remaining) {
      try {
        Deno.kill(process.pid, "SIGKILL");
      } catch (error) {
        // The process may have exited since the last check.
        if (await isRunning(process)) {
          throw error;
        }
      }
    }
    remaining = await waitForExit(remaining, KILL_TIMEOUT_MS);

    this.#logTextAfterStop = await this.logText();
    await Deno.remove(this.folder, { recursive: true });
    if (remaining.length > 0) {
      const pids = remaining.map((process) => process.pid).join(", ");
      throw new Error(`ejabberd processes ${pids} are still running after SIGKILL`);
    }
  }

  /**
   * Returns the VM from the PID file and every process whose command line
   * contains this node's folder, which catches a VM that has not written its
   * PID file yet. The folder name is random, so no other process matches.
   */
  async #findNodeProcesses(): Promise<ProcessIdentity[]> {
    const processes = this.#beamProcess === undefined ? [] : [this.#beamProcess];
    for await (const entry of Deno.readDir("/proc")) {
      const pid = Number(entry.name);
      if (!Number.isInteger(pid) || pid === this.#beamProcess?.pid) {
        continue;
      }
      let commandLine: string;
      try {
        commandLine = await Deno.readTextFile(`/proc/${pid}/cmdline`);
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) {
          continue;
        }
        throw error;
      }
      if (commandLine.includes(this.folder)) {
        const process = await readProcessIdentity(pid);
        if (process !== undefined) {
          processes.push(process);
        }
      }
    }
    return processes;
  }

  #pidPath(): string {
    return join(this.folder, "ejabberd.pid");
  }

  async #readBeamProcess(): Promise<ProcessIdentity | undefined> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.#pidPath());
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        return undefined;
      }
      throw error;
    }
    const pid = Number(text.trim());
    if (!Number.isInteger(pid) || pid <= 0) {
      return undefined;
    }
    return await readProcessIdentity(pid);
  }

  /** Runs `ejabberdctl` for this node as the ejabberd user. */
  async #ctl(args: string[]): Promise<{ success: boolean; code: number; text: string }> {
    const folder = this.folder;
    const command = [
      // The VM creates the Erlang cookie file (.erlang.cookie) in HOME on first start.
      "env",
      `HOME=${folder}`,
      this.#ejabberdctl,
      "--config-dir",
      folder,
      "--config",
      join(folder, "ejabberd.yml"),
      "--ctl-config",
      join(folder, "ejabberdctl.cfg"),
      "--logs",
      join(folder, "logs"),
      "--spool",
      join(folder, "db"),
      "--node",
      this.#nodeName,
      ...args,
    ];
    const result = await runAsEjabberd(command, CTL_TIMEOUT_MS);
    return {
      success: result.success,
      code: result.code,
      text: decodeOutput(result.stdout, result.stderr),
    };
  }
}

/**
 * Copies the program (`main.ts`, `lib/`, `deno.json` and `deno.lock` when it
 * exists) from `repoRoot` to `folder/program`, fills the Deno cache
 * `folder/deno-dir` with its dependencies by running `deno cache` as root,
 * and hands both to the ejabberd user. Creates `folder` when it does not exist
 * and changes its owner to ejabberd, so it must not be a folder that other
 * users rely on. Uses a copy of the deno binary in `folder/bin` when the
 * ejabberd user cannot run the current one (for example under /root).
 *
 * Returns the command that runs the copy, for `extauth_program`, without the
 * program's own arguments:
 * `env DENO_DIR=FOLDER/deno-dir NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 DENO run --cached-only
 * --permission-set=auth-mastodon --config FOLDER/program/deno.json
 * FOLDER/program/main.ts`.
 */
export async function prepareProgramCopy(repoRoot: string, folder: string): Promise<string> {
  const programFolder = join(folder, "program");
  const denoDir = join(folder, "deno-dir");
  await Deno.mkdir(folder, { recursive: true });
  await Deno.remove(programFolder, { recursive: true }).catch(ignoreNotFound);
  await Deno.mkdir(programFolder);
  await Deno.mkdir(denoDir, { recursive: true });

  for (const name of ["main.ts", "lib", "deno.json", "deno.lock"]) {
    const source = join(repoRoot, name);
    const optional = name === "deno.lock";
    try {
      await cp(source, join(programFolder, name), { recursive: true });
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === "ENOENT" && optional) {
        continue;
      }
      throw new Error(`failed to copy ${source} to ${programFolder}: ${errorMessage(error)}`, {
        cause: error,
      });
    }
  }

  const configPath = join(programFolder, "deno.json");
  const mainPath = join(programFolder, "main.ts");
  const cacheResult = await new Deno.Command(Deno.execPath(), {
    args: ["cache", "--config", configPath, mainPath],
    env: { DENO_DIR: denoDir, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(DENO_CACHE_TIMEOUT_MS),
  }).output();
  if (!cacheResult.success) {
    throw new Error(
      `deno cache ${mainPath} exited with code ${cacheResult.code}: ${
        decodeOutput(cacheResult.stdout, cacheResult.stderr)
      }`,
    );
  }

  let denoPath = Deno.execPath();
  const chownPaths = [programFolder, denoDir];
  if (!(await ejabberdCanRun(["test", "-x", denoPath]))) {
    const binFolder = join(folder, "bin");
    await Deno.mkdir(binFolder, { recursive: true });
    denoPath = join(binFolder, "deno");
    await Deno.copyFile(Deno.execPath(), denoPath);
    await Deno.chmod(denoPath, 0o755);
    chownPaths.push(binFolder);
  }
  await chownToEjabberd(["-R", ...chownPaths]);
  await chownToEjabberd([folder]);

  if (!(await ejabberdCanRun(["test", "-r", mainPath]))) {
    throw new Error(
      `the ejabberd user cannot read ${mainPath}: choose a folder whose parent folders it can enter, such as one in /tmp`,
    );
  }

  // The flags of the start task (such as the permission set), so ejabberd runs the program
  // exactly as `deno task start` and the compiled binary would.
  const startTask = String(JSON.parse(await Deno.readTextFile(configPath)).tasks.start).split(
    /\s+/,
  );
  if (startTask[0] !== "deno" || startTask[1] !== "run" || startTask.at(-1) !== "main.ts") {
    throw new Error(`the start task in ${configPath} is not "deno run ... main.ts"`);
  }
  return [
    "env",
    `DENO_DIR=${shellQuote(denoDir)}`,
    "NO_COLOR=1",
    // Without it, `deno run` looks up dl.deno.land to check for a newer release.
    "DENO_NO_UPDATE_CHECK=1",
    shellQuote(denoPath),
    "run",
    "--cached-only",
    "--config",
    shellQuote(configPath),
    ...startTask.slice(2, -1),
    shellQuote(mainPath),
  ].join(" ");
}

async function ejabberdCanRun(command: string[]): Promise<boolean> {
  const result = await runAsEjabberd(command, CTL_TIMEOUT_MS);
  return result.success;
}

/** Runs `command` as the ejabberd user with {@linkcode CHILD_ENVIRONMENT}. */
async function runAsEjabberd(command: string[], timeoutMs: number): Promise<Deno.CommandOutput> {
  // `"$0" "$@"` runs the arguments after the user name without another round of shell parsing.
  return await new Deno.Command("su", {
    args: [EJABBERD_USER, "-s", "/bin/sh", "-c", '"$0" "$@"', "--", ...command],
    clearEnv: true,
    env: CHILD_ENVIRONMENT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
}

async function chownToEjabberd(args: string[]): Promise<void> {
  const result = await new Deno.Command("chown", {
    args: [`${EJABBERD_USER}:${EJABBERD_USER}`, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!result.success) {
    throw new Error(
      `chown ${args.join(" ")} exited with code ${result.code}: ${
        decodeOutput(result.stdout, result.stderr)
      }`,
    );
  }
}

/**
 * Quotes `value` for /bin/sh. Values made only of characters that the shell
 * does not interpret are returned unchanged, which keeps command lines readable.
 */
function shellQuote(value: string): string {
  if (/^[A-Za-z0-9_\/.,:=+@%-]+$/.test(value)) {
    return value;
  }
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

// NOTE: the ports are free when this returns, but another process may take
// one before ejabberd binds it. The node then fails to start with a bind error
// in its log.
function findFreePorts(count: number): number[] {
  // All listeners stay open until every port is chosen, so the ports differ.
  const listeners = [];
  for (let index = 0; index < count; index++) {
    listeners.push(Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  }
  const ports = listeners.map((listener) => (listener.addr as Deno.NetAddr).port);
  for (const listener of listeners) {
    listener.close();
  }
  return ports;
}

async function isPortOpen(port: number): Promise<boolean> {
  try {
    const connection = await Deno.connect({ hostname: "127.0.0.1", port });
    connection.close();
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.ConnectionRefused) {
      return false;
    }
    throw error;
  }
}

async function readProcessIdentity(pid: number): Promise<ProcessIdentity | undefined> {
  const fields = await readStatFields(pid);
  if (fields === undefined) {
    return undefined;
  }
  return { pid, startTime: fields.startTime };
}

/**
 * Reads the state, parent PID and start time of process `pid` from
 * /proc/PID/stat, or of its thread `threadId` from /proc/PID/task/TID/stat.
 * Returns undefined when the process or thread does not exist.
 */
async function readStatFields(
  pid: number,
  threadId?: number,
): Promise<{ state: string; parentPid: number; startTime: string } | undefined> {
  const path = threadId === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${threadId}/stat`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return undefined;
    }
    throw error;
  }
  // The command name in field 2 is in parentheses and may contain spaces, so
  // the remaining fields start after the last ')'. proc(5) numbers them from 1:
  // state is field 3, the parent PID field 4 and the start time field 22.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: rest[0], parentPid: Number(rest[1]), startTime: rest[19] };
}

/**
 * Returns true while any thread of the process runs. A process whose threads
 * are all zombies counts as exited, because its parent may never reap it (PID 1
 * in some containers does not). The main thread alone is not enough, because
 * it can be a zombie while other threads of the VM still write files.
 */
async function isRunning(process: ProcessIdentity): Promise<boolean> {
  const fields = await readStatFields(process.pid);
  if (fields === undefined || fields.startTime !== process.startTime) {
    return false;
  }
  try {
    for await (const entry of Deno.readDir(`/proc/${process.pid}/task`)) {
      const threadFields = await readStatFields(process.pid, Number(entry.name));
      if (threadFields !== undefined && threadFields.state !== "Z" && threadFields.state !== "X") {
        return true;
      }
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw error;
    }
  }
  return false;
}

/** Lists the running processes among `roots` and all their descendants from /proc. */
async function listProcessTrees(roots: ProcessIdentity[]): Promise<ProcessIdentity[]> {
  const childrenByParent = new Map<number, ProcessIdentity[]>();
  for await (const entry of Deno.readDir("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid)) {
      continue;
    }
    const fields = await readStatFields(pid);
    if (fields === undefined) {
      continue;
    }
    const siblings = childrenByParent.get(fields.parentPid) ?? [];
    siblings.push({ pid, startTime: fields.startTime });
    childrenByParent.set(fields.parentPid, siblings);
  }

  const tree: ProcessIdentity[] = [];
  const seen = new Set<number>();
  const pending = [...roots];
  while (pending.length > 0) {
    const process = pending.pop()!;
    if (seen.has(process.pid) || !(await isRunning(process))) {
      continue;
    }
    seen.add(process.pid);
    tree.push(process);
    pending.push(...(childrenByParent.get(process.pid) ?? []));
  }
  return tree;
}

/** Waits up to `timeoutMs` and returns the processes that still run. */
async function waitForExit(
  processes: ProcessIdentity[],
  timeoutMs: number,
): Promise<ProcessIdentity[]> {
  const deadline = Date.now() + timeoutMs;
  let remaining = processes;
  while (true) {
    const stillRunning = [];
    for (const process of remaining) {
      if (await isRunning(process)) {
        stillRunning.push(process);
      }
    }
    remaining = stillRunning;
    if (remaining.length === 0 || Date.now() > deadline) {
      return remaining;
    }
    await delay(POLL_INTERVAL_MS);
  }
}

function decodeOutput(stdout: Uint8Array, stderr: Uint8Array): string {
  const decoder = new TextDecoder();
  return `stdout: ${decoder.decode(stdout).trim()}\nstderr: ${decoder.decode(stderr).trim()}`;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function ignoreNotFound(error: unknown): void {
  if (!(error instanceof Deno.errors.NotFound)) {
    throw error;
  }
}

function delay(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}
