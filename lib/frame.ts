/**
 * ejabberd's external authentication framing: every message in both
 * directions starts with a 2-byte unsigned big-endian length.
 *
 * @module
 */

/** Size of the length prefix in bytes. */
export const LENGTH_PREFIX_BYTES = 2;

/** Largest request body a 2-byte unsigned length can announce (0xFFFF). */
export const MAX_REQUEST_BYTES = 0xffff;

/** The reply for "yes": length 2, then the 16-bit value 1 (`00 02 00 01`). */
export const REPLY_TRUE: Uint8Array = Uint8Array.of(0x00, 0x02, 0x00, 0x01);

/** The reply for "no": length 2, then the 16-bit value 0 (`00 02 00 00`). */
export const REPLY_FALSE: Uint8Array = Uint8Array.of(0x00, 0x02, 0x00, 0x00);

/** Returns the 4-byte reply for a boolean result. */
export function encodeReply(result: boolean): Uint8Array {
  return result ? REPLY_TRUE : REPLY_FALSE;
}

/**
 * Splits a byte stream into request frames.
 *
 * A read from a pipe may hold part of a frame or several frames, so chunks
 * are appended to one buffer and complete frames are sliced off its front.
 */
export class FrameReader {
  #buffer = new Uint8Array(4096);
  #start = 0;
  #end = 0;

  /** Appends a chunk read from the stream. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#compact(chunk.length);
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /**
   * Returns the body of the next complete frame and removes it from the
   * buffer, or `undefined` when no complete frame is buffered. A frame of
   * length 0 returns an empty array. The returned array is a copy.
   */
  next(): Uint8Array | undefined {
    const available = this.#end - this.#start;
    if (available < LENGTH_PREFIX_BYTES) return undefined;
    const length = (this.#buffer[this.#start] << 8) | this.#buffer[this.#start + 1];
    if (available < LENGTH_PREFIX_BYTES + length) return undefined;
    const bodyStart = this.#start + LENGTH_PREFIX_BYTES;
    const body = this.#buffer.slice(bodyStart, bodyStart + length);
    this.#start = bodyStart + length;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return body;
  }

  /** Number of bytes buffered that do not yet form a complete frame. */
  get pendingBytes(): number {
    return this.#end - this.#start;
  }

  /**
   * Length announced by the incomplete frame at the front of the buffer, or
   * `undefined` when not even its length prefix has arrived.
   */
  get pendingFrameLength(): number | undefined {
    if (this.#end - this.#start < LENGTH_PREFIX_BYTES) return undefined;
    return (this.#buffer[this.#start] << 8) | this.#buffer[this.#start + 1];
  }

  /** Makes room for `extra` more bytes, moving buffered bytes to the front. */
  #compact(extra: number): void {
    const used = this.#end - this.#start;
    if (this.#end + extra <= this.#buffer.length) return;
    if (used + extra <= this.#buffer.length) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
    } else {
      let size = this.#buffer.length;
      while (size < used + extra) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = grown;
    }
    this.#start = 0;
    this.#end = used;
  }
}
