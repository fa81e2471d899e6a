/**
 * Runs the real program as ejabberd does: a child process with piped stdin,
 * stdout and stderr and no terminal, started with exactly the command of the
 * `start` task in deno.json, so with the permissions of the compiled binary.
 *
 * @module
 */

import assert from "node:assert/strict";
import { allSecrets } from "./mastodon.ts";

export const REPO_ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

const REPLY_TRUE = [0, 2, 0, 1];
const REPLY_FALSE = [0, 2, 0, 0];

/**
 * The arguments of `deno task start` after "deno": the same permission set,
 * with deno.json and main.ts given by absolute path.
 */
export async function startTaskArguments(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${REPO_ROOT}/deno.json`));
  const words = String(config.tasks.start).split(/\s+/);
  assert.equal(words[0], "deno", "the start task must run deno");
  const args = words.slice(1).map((word) => word === "main.ts" ? `${REPO_ROOT}/main.ts` : word);
  return [args[0], "--config", `${REPO_ROOT}/deno.json`, ...args.slice(1)];
}

/** Frames a request: 2-byte big-endian length, then the bytes. */
export function frame(request: string | Uint8Array): Uint8Array {
  const body = typeof request === "string" ? new TextEncoder().encode(request) : request;
  const framed = new Uint8Array(2 + body.length);
  framed[0] = body.length >> 8;
  framed[1] = body.length & 0xff;
  framed.set(body, 2);
  return framed;
}

/** Joins byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const joined = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.length;
  }
  return joined;
}

/** Fails the test when any test secret appears in `text`. */
export function assertNoSecrets(text: string, where: string): void {
  for (const secret of allSecrets()) {
    if (secret.length >= 6 && text.includes(secret)) {
      assert.fail(`a secret (${secret.length} characters) appears in ${where}`);
    }
  }
}

/**
 * Returns the environment the program runs with in the tests: a cleared
 * environment, as under ejabberd, with PATH, HOME, NO_COLOR,
 * DENO_NO_UPDATE_CHECK and DENO_DIR, so no PG* variable of the test runner
 * reaches it.
 */
export function programEnvironment(): Record<string, string> {
  const denoDir = Deno.env.get("DENO_DIR");
  return {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/tmp",
    NO_COLOR: "1",
    DENO_NO_UPDATE_CHECK: "1",
    ...(denoDir ? { DENO_DIR: denoDir } : {}),
  };
}

/** Output of a command run to completion. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the program with `args` (a subcommand, --help, ...) to completion, with
 * the start task's permissions and `stdin` as its input.
 */
export async function runCommand(
  args: string[],
  options: { stdin?: string | Uint8Array } = {},
): Promise<CommandResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...await startTaskArguments(), ...args],
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    clearEnv: true,
    env: programEnvironment(),
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    const input = typeof options.stdin === "string"
      ? new TextEncoder().encode(options.stdin)
      : options.stdin;
    await writer.write(input);
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  const result = {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
  assertNoSecrets(result.stdout, "stdout");
  assertNoSecrets(result.stderr, "stderr");
  return result;
}

export interface ExitResult {
  code: number;
  signal: Deno.Signal | null;
  stderr: string;
  /** Bytes written to stdout after the last reply that was read. */
  extraStdout: Uint8Array;
  /** Milliseconds from the call to exit until the process ended. */
  waitedMs: number;
}

export interface ProgramOptions {
  /** Arguments after main.ts, such as ["-c", path]. */
  args: string[];
  /** Log file the program writes, searched for secrets at exit. */
  logFile?: string;
  env?: Record<string, string>;
}

/** One running program with helpers to talk the ejabberd protocol to it. */
export class Program {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #logFile: string | undefined;
  #stdout: Uint8Array = new Uint8Array(0);
  #stdoutWaiters: (() => void)[] = [];
  #stdoutDone: Promise<void>;
  #stderr = "";
  #stderrDone: Promise<void>;
  #status: Promise<Deno.CommandStatus>;
  #stdinClosed = false;

  private constructor(child: Deno.ChildProcess, logFile: string | undefined) {
    this.#child = child;
    this.#logFile = logFile;
    this.#writer = child.stdin.getWriter();
    this.#stdoutDone = this.#collectStdout();
    this.#stderrDone = this.#collectStderr();
    this.#status = child.status;
  }

  /** Starts the program with the start task's permissions. */
  static async start(options: ProgramOptions): Promise<Program> {
    const command = new Deno.Command(Deno.execPath(), {
      args: [...await startTaskArguments(), ...options.args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env: { ...programEnvironment(), ...options.env },
    });
    return new Program(command.spawn(), options.logFile);
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Writes raw bytes to stdin. */
  async send(bytes: Uint8Array): Promise<void> {
    await this.#writer.write(bytes);
  }

  /** Sends one framed request and returns the reply as a boolean. */
  async request(request: string | Uint8Array, timeoutMs = 10_000): Promise<boolean> {
    await this.send(frame(request));
    return await this.reply(timeoutMs);
  }

  /** Reads the next 4-byte reply; fails on anything but the two valid replies. */
  async reply(timeoutMs = 10_000): Promise<boolean> {
    const bytes = await this.readStdout(4, timeoutMs);
    const values = [...bytes];
    if (JSON.stringify(values) === JSON.stringify(REPLY_TRUE)) return true;
    if (JSON.stringify(values) === JSON.stringify(REPLY_FALSE)) return false;
    assert.fail(`invalid reply bytes ${JSON.stringify(values)}; stderr:\n${this.#stderr}`);
  }

  /** Reads exactly `count` stdout bytes, or fails after `timeoutMs`. */
  async readStdout(count: number, timeoutMs: number): Promise<Uint8Array> {
    const deadline = performance.now() + timeoutMs;
    while (this.#stdout.length < count) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) {
        assert.fail(
          `no reply within ${timeoutMs} ms (${this.#stdout.length} of ${count} bytes); ` +
            `stderr:\n${this.#stderr}`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#stdoutWaiters.push(resolve)),
        new Promise<void>((resolve) => timer = setTimeout(resolve, remaining)),
      ]);
      clearTimeout(timer);
    }
    const bytes = this.#stdout.slice(0, count);
    this.#stdout = this.#stdout.slice(count);
    return bytes;
  }

  /** Closes stdin, as ejabberd does when it stops the program. */
  async closeStdin(): Promise<void> {
    if (this.#stdinClosed) return;
    this.#stdinClosed = true;
    try {
      await this.#writer.close();
    } catch {
      // The program may have exited already.
    }
  }

  /** Sends a signal to the program. */
  kill(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /**
   * Waits for the program to exit (killing it after `timeoutMs`), and checks
   * that stderr and the log file contain no secret.
   */
  async exit(timeoutMs = 10_000): Promise<ExitResult> {
    const started = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        try {
          this.#child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
        resolve();
      }, timeoutMs);
    });
    const status = await Promise.race([this.#status, killed.then(() => this.#status)]);
    clearTimeout(timer);
    const waitedMs = performance.now() - started;
    await this.closeStdin();
    await this.#stdoutDone;
    await this.#stderrDone;
    assertNoSecrets(this.#stderr, "stderr");
    if (this.#logFile) {
      const log = await Deno.readTextFile(this.#logFile).catch(() => "");
      assertNoSecrets(log, this.#logFile);
    }
    return {
      code: status.code,
      signal: status.signal,
      stderr: this.#stderr,
      extraStdout: this.#stdout,
      waitedMs,
    };
  }

  /** Closes stdin and waits for the exit; fails unless it is a clean exit 0 with no extra output. */
  async finish(): Promise<ExitResult> {
    await this.closeStdin();
    const result = await this.exit();
    assert.equal(result.code, 0, `exit status ${result.code}; stderr:\n${result.stderr}`);
    assert.deepEqual([...result.extraStdout], [], "bytes on stdout after the last reply");
    return result;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.closeStdin();
    await this.#status;
    await this.#stdoutDone;
    await this.#stderrDone;
  }

  async #collectStdout(): Promise<void> {
    for await (const chunk of this.#child.stdout) {
      this.#stdout = concat(this.#stdout, chunk);
      const waiters = this.#stdoutWaiters;
      this.#stdoutWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  async #collectStderr(): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of this.#child.stderr) this.#stderr += decoder.decode(chunk);
  }
}
