/**
 * Reading a password for `auth-mastodon test`: without echo from a terminal,
 * or as one line from a pipe. The password stays bytes throughout.
 *
 * @module
 */

import { MAX_REQUEST_BYTES } from "./frame.ts";

const CARRIAGE_RETURN = 0x0d;
const LINE_FEED = 0x0a;
const CONTROL_C = 0x03;
const CONTROL_D = 0x04;
const BACKSPACE = 0x08;
const DELETE = 0x7f;

/** Reading stopped: Ctrl-C at the prompt, or nothing arrived on stdin. */
export class PasswordInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PasswordInputError";
  }
}

export interface PasswordInput {
  isTerminal(): boolean;
  setRaw(mode: boolean): void;
  read(buffer: Uint8Array): Promise<number | null>;
}

/**
 * Reads a password. At a terminal, `prompt` goes to stderr and the typed
 * characters are not echoed; otherwise one line is read, without its line end.
 */
export async function readPassword(
  prompt: string,
  input: PasswordInput = Deno.stdin,
  stderr: { writeSync(bytes: Uint8Array): number } = Deno.stderr,
): Promise<Uint8Array> {
  if (!input.isTerminal()) return await readLine(input);
  stderr.writeSync(new TextEncoder().encode(prompt));
  input.setRaw(true);
  try {
    return await readTyped(input);
  } finally {
    input.setRaw(false);
    stderr.writeSync(new TextEncoder().encode("\n"));
  }
}

async function readLine(input: PasswordInput): Promise<Uint8Array> {
  const bytes: number[] = [];
  const buffer = new Uint8Array(1024);
  while (bytes.length <= MAX_REQUEST_BYTES) {
    const count = await input.read(buffer);
    if (count === null) break;
    const chunk = buffer.subarray(0, count);
    const end = chunk.indexOf(LINE_FEED);
    bytes.push(...(end === -1 ? chunk : chunk.subarray(0, end)));
    if (end !== -1) break;
  }
  if (bytes.at(-1) === CARRIAGE_RETURN) bytes.pop();
  if (bytes.length === 0) throw new PasswordInputError("no password on stdin");
  return Uint8Array.from(bytes);
}

async function readTyped(input: PasswordInput): Promise<Uint8Array> {
  const bytes: number[] = [];
  const buffer = new Uint8Array(256);
  while (true) {
    const count = await input.read(buffer);
    if (count === null) break;
    for (const byte of buffer.subarray(0, count)) {
      if (byte === CARRIAGE_RETURN || byte === LINE_FEED) return Uint8Array.from(bytes);
      if (byte === CONTROL_C) throw new PasswordInputError("cancelled");
      if (byte === CONTROL_D && bytes.length === 0) throw new PasswordInputError("cancelled");
      if (byte === BACKSPACE || byte === DELETE) {
        // Remove the last UTF-8 character: its continuation bytes, then its first byte.
        while (bytes.length > 0 && (bytes[bytes.length - 1] & 0xc0) === 0x80) bytes.pop();
        bytes.pop();
        continue;
      }
      bytes.push(byte);
    }
  }
  return Uint8Array.from(bytes);
}
