/**
 * Requests the benchmark sends, with the reply each must get. Request texts
 * contain passwords and tokens, so only `kind` and `user` go into messages.
 *
 * @module
 */

import { PASSWORD } from "../tests/support/mastodon.ts";
import { generatedUsername } from "./setup.ts";

/** One request and the reply the program must send. */
export interface PlannedRequest {
  kind: RequestKind;
  user: string;
  text: string;
  expected: boolean;
}

export type RequestKind =
  | "isuser"
  | "isuser-unknown"
  | "auth-cached"
  | "auth-token"
  | "auth-bcrypt"
  | "auth-wrong-password";

/** Every n-th mixed request is a password login that runs bcrypt. */
export const MIXED_BCRYPT_EVERY = 100;

/** Users whose password the mixed workload logs in with again and again. */
const CACHED_POOL_SIZE = 50;

/** Wrong password of the mixed workload, for which bcrypt runs every time. */
const WRONG_PASSWORD = "wrong-Password-77";

export function isuserRequest(user: string, domain: string, expected = true): PlannedRequest {
  return { kind: "isuser", user, text: `isuser:${user}:${domain}`, expected };
}

export function passwordRequest(
  user: string,
  domain: string,
  kind: RequestKind = "auth-bcrypt",
): PlannedRequest {
  return { kind, user, text: `auth:${user}:${domain}:${PASSWORD}`, expected: true };
}

export function tokenRequest(user: string, domain: string, token: string): PlannedRequest {
  return { kind: "auth-token", user, text: `auth:${user}:${domain}:${token}`, expected: true };
}

export interface MixedWorkloadOptions {
  random: () => number;
  domain: string;
  generatedAccounts: number;
  tokenUser: string;
  token: string;
}

/**
 * An endless mix of request kinds. Every {@linkcode MIXED_BCRYPT_EVERY}-th
 * request runs bcrypt: alternately the first login of a user not seen before
 * (which then enters the cache) and a wrong password. Of the others, 50 % are
 * `isuser` of a random account, 10 % `isuser` of an unknown name, 20 % the
 * password of one of 50 users (bcrypt on first sight, cached afterwards) and
 * 20 % the access token.
 */
export class MixedWorkload {
  readonly #options: MixedWorkloadOptions;
  #sent = 0;
  #nextNewUser = 1;

  constructor(options: MixedWorkloadOptions) {
    this.#options = options;
  }

  next(): PlannedRequest {
    const { random, domain, generatedAccounts } = this.#options;
    const index = this.#sent++;
    if (index % MIXED_BCRYPT_EVERY === 0) {
      const user = generatedUsername(this.#nextNewUser);
      if ((index / MIXED_BCRYPT_EVERY) % 2 === 0) {
        this.#nextNewUser++;
        return passwordRequest(user, domain, "auth-bcrypt");
      }
      return {
        kind: "auth-wrong-password",
        user,
        text: `auth:${user}:${domain}:${WRONG_PASSWORD}`,
        expected: false,
      };
    }

    const draw = random();
    if (draw < 0.5) {
      return isuserRequest(generatedUsername(1 + Math.floor(random() * generatedAccounts)), domain);
    }
    if (draw < 0.6) {
      const user = `nobody${Math.floor(random() * 1_000_000)}`;
      return { ...isuserRequest(user, domain, false), kind: "isuser-unknown" };
    }
    if (draw < 0.8) {
      const poolIndex = generatedAccounts - Math.floor(random() * CACHED_POOL_SIZE);
      return passwordRequest(generatedUsername(poolIndex), domain, "auth-cached");
    }
    return tokenRequest(this.#options.tokenUser, domain, this.#options.token);
  }
}
