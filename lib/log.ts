/**
 * Logging to a file or to stderr, never to stdout, which carries replies only.
 *
 * Every line starts with a UTC timestamp, then the outcome of a decision
 * (`accepted`, `rejected`, `error`) or the level of any other message.
 * Callers pass no secrets: passwords, tokens and the database password are
 * never part of a message.
 *
 * @module
 */

import type { LogLevel } from "./config.ts";

const LEVEL_RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** Window in which repeats of one message are counted instead of written. */
export const REPEAT_WINDOW_MS = 60_000;

/** Maximum length of a user or domain written to a log line; longer text is cut. */
const MAX_FIELD_CHARS = 200;

const encoder = new TextEncoder();

export interface LoggerOptions {
  level: LogLevel;
  /** Log file path, or `undefined` for stderr. */
  file?: string;
  /** Also write lines of level `error` to stderr when logging to a file. */
  errorsToStderr?: boolean;
  /** Clock in milliseconds, replaceable in tests. */
  now?: () => number;
  /** Destination of stderr lines, replaceable in tests. */
  stderr?: { writeSync(bytes: Uint8Array): number };
}

interface RepeatState {
  level: LogLevel;
  windowStart: number;
  suppressed: number;
  lastMessage: string;
}

/** Writes log lines and counts repeated messages. */
export class Logger {
  #level: LogLevel;
  #path: string | undefined;
  #file: Deno.FsFile | undefined;
  #errorsToStderr: boolean;
  #now: () => number;
  #stderr: { writeSync(bytes: Uint8Array): number };
  #repeats = new Map<string, RepeatState>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: LoggerOptions) {
    this.#level = options.level;
    this.#path = options.file;
    this.#errorsToStderr = options.errorsToStderr ?? false;
    this.#now = options.now ?? Date.now;
    this.#stderr = options.stderr ?? Deno.stderr;
    this.#open();
  }

  get level(): LogLevel {
    return this.#level;
  }

  /** Log file path, or `undefined` when logging to stderr. */
  get file(): string | undefined {
    return this.#path;
  }

  /** Returns true when a line of `level` would be written. */
  enabled(level: LogLevel): boolean {
    return LEVEL_RANK[level] <= LEVEL_RANK[this.#level];
  }

  error(message: string): void {
    this.write("error", "error", message);
  }

  warn(message: string): void {
    this.write("warn", "warn", message);
  }

  info(message: string): void {
    this.write("info", "info", message);
  }

  debug(message: string): void {
    this.write("debug", "debug", message);
  }

  /**
   * Writes one line at `level`, starting with `word` (the level name, or the
   * outcome of a decision).
   */
  write(level: LogLevel, word: string, message: string): void {
    if (!this.enabled(level)) return;
    const line = `${new Date(this.#now()).toISOString()} ${word} ${message}\n`;
    const bytes = encoder.encode(line);
    if (this.#file !== undefined) {
      try {
        writeAllSync(this.#file, bytes);
        if (level === "error" && this.#errorsToStderr) writeAllSync(this.#stderr, bytes);
        return;
      } catch (error) {
        this.#fallBackToStderr(error);
      }
    }
    try {
      writeAllSync(this.#stderr, bytes);
    } catch {
      // stderr is gone as well; there is nowhere left to report to.
    }
  }

  /**
   * Writes a message that may repeat many times, such as "database
   * unavailable" during an outage. The first occurrence in each window is
   * written; the others are counted and summarised once the window ends.
   */
  repeated(level: LogLevel, key: string, word: string, message: string): void {
    const now = this.#now();
    const state = this.#repeats.get(key);
    if (state !== undefined && now - state.windowStart < REPEAT_WINDOW_MS) {
      state.suppressed++;
      state.lastMessage = message;
      this.#scheduleFlush();
      return;
    }
    if (state !== undefined) this.#writeSummary(key, state, now);
    this.#repeats.set(key, { level, windowStart: now, suppressed: 0, lastMessage: message });
    this.write(level, word, message);
    this.#scheduleFlush();
  }

  /** Writes the counts of suppressed repeats whose window has ended, or all of them. */
  flushRepeats(all = false): void {
    const now = this.#now();
    for (const [key, state] of this.#repeats) {
      if (!all && now - state.windowStart < REPEAT_WINDOW_MS) continue;
      this.#writeSummary(key, state, now);
      this.#repeats.delete(key);
    }
  }

  /** Changes level and file, as after a configuration reload. */
  configure(options: { level: LogLevel; file?: string }): void {
    this.#level = options.level;
    if (options.file !== this.#path) {
      this.#path = options.file;
      this.reopen();
    }
  }

  /** Closes and opens the log file again, for log rotation. */
  reopen(): void {
    this.#closeFile();
    this.#open();
  }

  /** Writes pending repeat counts and closes the file. */
  close(): void {
    this.flushRepeats(true);
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#closeFile();
  }

  #writeSummary(key: string, state: RepeatState, now: number): void {
    if (state.suppressed === 0) return;
    const seconds = Math.max(1, Math.round((now - state.windowStart) / 1000));
    const times = state.suppressed === 1 ? "time" : "times";
    this.write(
      state.level,
      state.level,
      `repeated ${state.suppressed} more ${times} in ${seconds} s (${key}), last: ${state.lastMessage}`,
    );
  }

  #scheduleFlush(): void {
    if (this.#timer !== undefined) return;
    const timer = setTimeout(() => {
      this.#timer = undefined;
      this.flushRepeats();
      const pending = [...this.#repeats.values()].some((state) => state.suppressed > 0);
      if (pending) this.#scheduleFlush();
    }, REPEAT_WINDOW_MS);
    // The summary timer must not keep the process alive after stdin closes.
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #open(): void {
    if (this.#path === undefined) return;
    try {
      this.#file = Deno.openSync(this.#path, { append: true, create: true, mode: 0o640 });
    } catch (error) {
      this.#fallBackToStderr(error);
    }
  }

  #closeFile(): void {
    try {
      this.#file?.close();
    } catch {
      // Already closed.
    }
    this.#file = undefined;
  }

  #fallBackToStderr(error: unknown): void {
    const path = this.#path;
    this.#closeFile();
    const reason = error instanceof Error ? error.message : String(error);
    const line = `${new Date(this.#now()).toISOString()} error cannot write log file "${path}": ` +
      `${reason}; logging to stderr until the file is reopened (SIGHUP): ` +
      `check that the folder exists and is writable by the user running auth-mastodon\n`;
    try {
      writeAllSync(this.#stderr, encoder.encode(line));
    } catch {
      // Nowhere left to report to.
    }
  }
}

function writeAllSync(target: { writeSync(bytes: Uint8Array): number }, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.length) offset += target.writeSync(bytes.subarray(offset));
}

/**
 * Makes text safe for one log line: control characters and backslashes are
 * escaped, and long text is cut. Spaces are escaped too unless `spaces` is
 * set, so that a user name stays one field.
 */
export function logSafe(
  text: string,
  options: { spaces?: boolean; maxChars?: number } = {},
): string {
  const maxChars = options.maxChars ?? MAX_FIELD_CHARS;
  const cut = text.length > maxChars ? `${text.slice(0, maxChars)}...` : text;
  const unsafe = options.spaces
    // deno-lint-ignore no-control-regex
    ? /[\x00-\x1f\x7f-\x9f\\\u2028\u2029]/g
    // deno-lint-ignore no-control-regex
    : /[\x00-\x20\x7f-\x9f\\\u2028\u2029]/g;
  return cut.replace(unsafe, (character) => {
    const code = character.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}
