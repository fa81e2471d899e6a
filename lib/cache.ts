/**
 * An in-memory cache of passwords that bcrypt has verified, so a client that
 * reconnects pays for bcrypt once per password instead of once per login.
 *
 * No password is kept: an entry contains an HMAC-SHA-256 of the password bytes
 * under a random key made when the cache is created. An entry is tied to the
 * user's id and the stored bcrypt hash, so a password change in Mastodon
 * makes it miss. Account state is not cached: the caller reads it from the
 * database on every request. Failed attempts are never cached.
 *
 * @module
 */

import { createHmac } from "node:crypto";

interface Entry {
  /** `users.encrypted_password` at the time of verification. */
  hash: string;
  mac: Uint8Array;
  expiresAt: number;
}

export interface PasswordCacheOptions {
  /** Seconds an entry stays valid after verification; 0 turns the cache off. */
  ttlSeconds: number;
  /** Entries kept at most; the least recently used one goes first. */
  maxEntries: number;
  /** Clock in milliseconds, replaceable in tests. */
  now?: () => number;
}

/** Verified passwords by user id, as HMACs, with expiry and a size bound. */
export class PasswordCache {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #key = crypto.getRandomValues(new Uint8Array(32));

  constructor(options: PasswordCacheOptions) {
    this.#ttlMs = options.ttlSeconds * 1000;
    this.#maxEntries = options.maxEntries;
    this.#now = options.now ?? Date.now;
  }

  /** False when `cache_ttl` is 0. */
  get enabled(): boolean {
    return this.#ttlMs > 0;
  }

  /** Number of entries held, expired ones included until they are looked up. */
  get size(): number {
    return this.#entries.size;
  }

  /** Returns true when this password was verified for this user and hash within the TTL. */
  has(userId: string, hash: string, password: Uint8Array): boolean {
    if (!this.enabled) return false;
    const entry = this.#entries.get(userId);
    if (entry === undefined) return false;
    if (entry.hash !== hash || entry.expiresAt <= this.#now()) {
      this.#entries.delete(userId);
      return false;
    }
    if (!equalBytes(this.#mac(password), entry.mac)) return false;
    // Moving the entry to the end of the map keeps the least recently used first.
    this.#entries.delete(userId);
    this.#entries.set(userId, entry);
    return true;
  }

  /** Records a password that bcrypt has just verified. */
  add(userId: string, hash: string, password: Uint8Array): void {
    if (!this.enabled) return;
    this.#entries.delete(userId);
    this.#entries.set(userId, {
      hash,
      mac: this.#mac(password),
      expiresAt: this.#now() + this.#ttlMs,
    });
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }

  /** Removes every entry, as after a configuration reload. */
  clear(): void {
    this.#entries.clear();
  }

  /**
   * Computes the HMAC synchronously with node:crypto, which postgres.js
   * loads anyway. WebCrypto's asynchronous sign() cost about 0.5 ms per call
   * here, which a cached login would pay every time.
   */
  #mac(password: Uint8Array): Uint8Array {
    return createHmac("sha256", this.#key).update(password).digest();
  }
}

/** Compares two byte arrays in time that depends only on their length. */
function equalBytes(left: Uint8Array, right: Uint8Array): boolean {
  if (left.length !== right.length) return false;
  let difference = 0;
  for (let index = 0; index < left.length; index++) difference |= left[index] ^ right[index];
  return difference === 0;
}
