/**
 * Parsing of one ejabberd request, `command:User:Server[:Password]`.
 *
 * The frame is split on `:` at most 3 times, so the password, which is always
 * last, may contain `:`. The password stays raw bytes: it is never decoded,
 * because a decoder would turn invalid UTF-8 into U+FFFD and two different
 * passwords could then compare equal.
 *
 * @module
 */

/** Commands decided from the database. */
export type ReadCommand = "auth" | "isuser";

/** Commands that would change accounts; the program never writes, so they are always false. */
export type WriteCommand = "setpass" | "tryregister" | "removeuser" | "removeuser3";

export type Command = ReadCommand | WriteCommand;

/** Number of `:`-separated fields, command included, that each command takes. */
const FIELD_COUNTS: Record<Command, number> = {
  auth: 4,
  isuser: 3,
  setpass: 4,
  tryregister: 4,
  removeuser: 3,
  removeuser3: 4,
};

const COLON = 0x3a;
const MAX_SPLITS = 3;

export interface AuthRequest {
  command: "auth";
  user: string;
  domain: string;
  password: Uint8Array;
}

export interface IsUserRequest {
  command: "isuser";
  user: string;
  domain: string;
}

export interface WriteRequest {
  command: WriteCommand;
  user: string;
  domain: string;
}

/** An unreadable request, with the reason for the log (never the request bytes). */
export interface MalformedRequest {
  command: Command | undefined;
  /** The user and domain when both were readable, for the log line. */
  user?: string;
  domain?: string;
  malformed: string;
}

export type Request = AuthRequest | IsUserRequest | WriteRequest;

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Splits and checks one request frame. */
export function parseRequest(frame: Uint8Array): Request | MalformedRequest {
  if (frame.length === 0) return { command: undefined, malformed: "empty request" };

  const fields = splitFields(frame);
  const commandText = decodeAscii(fields[0]);
  if (commandText === undefined || !Object.hasOwn(FIELD_COUNTS, commandText)) {
    // The text of an unknown command is not logged: a client that lost the
    // framing could put password bytes in this position.
    return { command: undefined, malformed: `unknown command (${fields[0].length} bytes)` };
  }
  const command = commandText as Command;

  if (fields.length < 3) {
    return {
      command,
      malformed: `${command} needs ${FIELD_COUNTS[command]} fields, got ${fields.length}`,
    };
  }
  const user = decodeUtf8(fields[1]);
  const domain = decodeUtf8(fields[2]);
  if (user === undefined) return { command, malformed: "user is not valid UTF-8" };
  if (domain === undefined) return { command, malformed: "domain is not valid UTF-8" };

  const expected = FIELD_COUNTS[command];
  if (fields.length !== expected) {
    return {
      command,
      user,
      domain,
      malformed: `${command} needs ${expected} fields, got ${fields.length}`,
    };
  }
  if (user === "") return { command, domain, malformed: "user is empty" };
  if (domain === "") return { command, user, malformed: "domain is empty" };

  if (command === "auth") {
    const password = fields[3];
    if (password.length === 0) return { command, user, domain, malformed: "password is empty" };
    return { command, user, domain, password };
  }
  if (command === "isuser") return { command, user, domain };
  return { command, user, domain };
}

/** Returns true when `parsed` could not be read as a request. */
export function isMalformed(parsed: Request | MalformedRequest): parsed is MalformedRequest {
  return "malformed" in parsed;
}

/** Splits on `:` at most three times; the views share the frame's memory. */
function splitFields(frame: Uint8Array): Uint8Array[] {
  const fields: Uint8Array[] = [];
  let start = 0;
  while (fields.length < MAX_SPLITS) {
    const colon = frame.indexOf(COLON, start);
    if (colon === -1) break;
    fields.push(frame.subarray(start, colon));
    start = colon + 1;
  }
  fields.push(frame.subarray(start));
  return fields;
}

function decodeAscii(bytes: Uint8Array): string | undefined {
  if (bytes.length > 16) return undefined;
  for (const byte of bytes) if (byte < 0x21 || byte > 0x7e) return undefined;
  return String.fromCharCode(...bytes);
}

function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}
