/**
 * bcrypt verification over the raw password bytes, as Mastodon's Devise
 * stores them: `$2a$10$` and 53 more characters, cost read from the hash.
 *
 * @module
 */

import { bcryptVerify } from "hash-wasm";

/** bcrypt reads only the first 72 bytes of a password; the rest never counts. */
export const BCRYPT_MAX_PASSWORD_BYTES = 72;

/** `$2a$`, `$2b$` or `$2y$`, a cost from 04 to 31, then 22 salt and 31 hash characters. */
const BCRYPT_HASH = /^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$/;

/**
 * A cost-10 hash of a random, discarded password, verified in place of
 * a missing hash so that unknown users take as long as known ones.
 */
export const DUMMY_HASH = "$2a$10$8FenrrJj9kYwrwgKkI.Ji.C8WSK5N.Nt757cOhVTSj.XhsCOdeDki";

/** Returns true when `hash` is a bcrypt hash this program can verify. */
export function isBcryptHash(hash: string): boolean {
  return BCRYPT_HASH.test(hash);
}

/**
 * Verifies `password` against a bcrypt `hash`. An empty or non-bcrypt hash
 * never matches but still costs one cost-10 verification, so the time taken
 * does not show which case applied.
 */
export async function verifyPassword(password: Uint8Array, hash: string): Promise<boolean> {
  const usable = isBcryptHash(hash);
  // hash-wasm rejects passwords over 72 bytes instead of ignoring the rest.
  const key = password.length > BCRYPT_MAX_PASSWORD_BYTES
    ? password.subarray(0, BCRYPT_MAX_PASSWORD_BYTES)
    : password;
  const matches = await bcryptVerify({ password: key, hash: usable ? hash : DUMMY_HASH });
  // Mastodon's bcrypt reads passwords as C strings, so no stored password
  // contains a NUL byte; hash-wasm would hash the bytes after it as well.
  return matches && usable && !key.includes(0);
}
