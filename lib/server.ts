/**
 * The request loop: reads frames from stdin, handles one request at a time,
 * and writes exactly one 4-byte reply per complete frame, in order.
 *
 * stdin is read while a request is being handled, so that EOF is seen at
 * once, also while the database is frozen. ejabberd closes stdin when it
 * stops or gives up on a request after 30 seconds, and sends no signal, so
 * EOF is the only sign that no reply will be read any more.
 *
 * @module
 */

import { encodeReply, FrameReader, LENGTH_PREFIX_BYTES } from "./frame.ts";
import type { Logger } from "./log.ts";

/**
 * Time a request may still take once stdin has closed. Requests already
 * received get replies as long as each takes less than this.
 */
export const EOF_GRACE_MS = 500;

/** Buffered input above which stdin is not read until requests are handled. */
const MAX_BUFFERED_BYTES = 1 << 20;

const READ_CHUNK_BYTES = 64 * 1024;

/** Limits for handling one request. */
export interface RequestLimits {
  /** `performance.now()` time by which the reply must be decided. */
  deadline: number;
  /** Aborted when the reply is no longer awaited. */
  signal: AbortSignal;
}

/** Decides one frame; true and false become the reply. Must not throw, but may. */
export type FrameHandler = (frame: Uint8Array, limits: RequestLimits) => Promise<boolean>;

/** Cause of the end of the loop. */
export type StopReason = "end-of-input" | "signal" | "output-closed";

export interface RequestLoopOptions {
  input: { read(buffer: Uint8Array): Promise<number | null> };
  output: { write(bytes: Uint8Array): Promise<number> };
  handle: FrameHandler;
  logger: Logger;
  /** Time one request may take, in milliseconds (`query_timeout`). */
  requestTimeoutMs: () => number;
}

/** Runs the request loop until EOF, a stop request, or a closed stdout. */
export class RequestLoop {
  readonly #options: RequestLoopOptions;
  readonly #frames = new FrameReader();
  #endOfInput = false;
  #stopRequested = false;
  #wake: (() => void) | undefined;
  #drained: (() => void) | undefined;
  #current: AbortController | undefined;
  #eofTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: RequestLoopOptions) {
    this.#options = options;
  }

  /** Finishes the request in flight, then ends the loop (SIGTERM, SIGINT). */
  stop(): void {
    this.#stopRequested = true;
    this.#wakeUp();
  }

  /** Handles requests until the loop ends; returns why it ended. */
  async run(): Promise<StopReason> {
    const reading = this.#readInput();
    try {
      return await this.#handleFrames();
    } finally {
      clearTimeout(this.#eofTimer);
      // The read loop ends at EOF; after a signal it stays parked on stdin,
      // and the process exits without waiting for it.
      void reading;
    }
  }

  async #readInput(): Promise<void> {
    const buffer = new Uint8Array(READ_CHUNK_BYTES);
    while (!this.#stopRequested) {
      if (this.#frames.pendingBytes > MAX_BUFFERED_BYTES) {
        await new Promise<void>((resolve) => this.#drained = resolve);
        continue;
      }
      let count: number | null;
      try {
        count = await this.#options.input.read(buffer);
      } catch (error) {
        this.#options.logger.error(`cannot read stdin: ${describe(error)}; stopping`);
        count = null;
      }
      if (count === null) {
        this.#endOfInput = true;
        this.#onEndOfInput();
        this.#wakeUp();
        return;
      }
      this.#frames.push(buffer.subarray(0, count));
      this.#wakeUp();
    }
  }

  #onEndOfInput(): void {
    const pending = this.#frames.pendingBytes;
    if (pending > 0) {
      const expected = this.#frames.pendingFrameLength;
      // Complete frames still get replies. Only an incomplete tail is dropped.
      const incomplete = expected === undefined || pending < LENGTH_PREFIX_BYTES + expected;
      if (incomplete && !this.#hasCompleteFrame()) {
        this.#options.logger.info(
          `stdin closed inside a request (${pending} of ${
            expected === undefined ? "?" : expected + LENGTH_PREFIX_BYTES
          } bytes received); exiting`,
        );
      }
    } else {
      this.#options.logger.debug("stdin closed; exiting");
    }
    // The request in flight gets at most EOF_GRACE_MS more.
    const current = this.#current;
    if (current !== undefined) {
      this.#eofTimer = setTimeout(() => current.abort(), EOF_GRACE_MS);
    }
  }

  #hasCompleteFrame(): boolean {
    const expected = this.#frames.pendingFrameLength;
    return expected !== undefined && this.#frames.pendingBytes >= LENGTH_PREFIX_BYTES + expected;
  }

  async #handleFrames(): Promise<StopReason> {
    while (true) {
      if (this.#stopRequested) return "signal";
      const frame = this.#frames.next();
      if (frame === undefined) {
        if (this.#endOfInput) return "end-of-input";
        await new Promise<void>((resolve) => this.#wake = resolve);
        continue;
      }
      if (this.#frames.pendingBytes <= MAX_BUFFERED_BYTES) this.#releaseReader();

      const timeout = this.#endOfInput
        ? Math.min(EOF_GRACE_MS, this.#options.requestTimeoutMs())
        : this.#options.requestTimeoutMs();
      const deadline = performance.now() + timeout;
      const controller = new AbortController();
      this.#current = controller;
      let result = false;
      try {
        result = await this.#options.handle(frame, { deadline, signal: controller.signal });
      } catch (error) {
        this.#options.logger.error(`internal error while handling a request: ${describe(error)}`);
        result = false;
      } finally {
        this.#current = undefined;
        clearTimeout(this.#eofTimer);
        frame.fill(0);
      }

      if (!await this.#reply(result)) return "output-closed";
      // After EOF the replies may go unread. Once a request used up its time,
      // the database is not responding and the rest would wait as well.
      if (this.#endOfInput && (controller.signal.aborted || performance.now() >= deadline)) {
        return "end-of-input";
      }
    }
  }

  async #reply(result: boolean): Promise<boolean> {
    const bytes = encodeReply(result);
    try {
      let offset = 0;
      while (offset < bytes.length) {
        offset += await this.#options.output.write(bytes.subarray(offset));
      }
      return true;
    } catch (error) {
      this.#options.logger.info(`stdout closed (${describe(error)}); exiting`);
      return false;
    }
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
    if (this.#stopRequested) this.#releaseReader();
  }

  #releaseReader(): void {
    const drained = this.#drained;
    this.#drained = undefined;
    drained?.();
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
