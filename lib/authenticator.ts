/**
 * The decision for one request: who may log in, and why not.
 *
 * @module
 */

import { type AccountBlock, accountBlock, findAccount } from "./accounts.ts";
import { createHash } from "node:crypto";
import { PasswordCache } from "./cache.ts";
import type { Config } from "./config.ts";
import { type Database, DatabaseError } from "./database.ts";
import type { Logger } from "./log.ts";
import { verifyPassword } from "./password.ts";
import { type Command, isMalformed, type MalformedRequest, type Request } from "./request.ts";
import { describeFeatures, detectSchema, SchemaError, type SchemaFeatures } from "./schema.ts";

/** Reason codes written to the log. */
export type Reason =
  | "ok"
  | AccountBlock
  | "wrong-password"
  | "token-revoked"
  | "token-expired"
  | "two-factor-required"
  | "external-account"
  | "foreign-domain"
  | "read-only"
  | "malformed-request"
  | "database-unavailable"
  | "not-configured";

export type Outcome = "accepted" | "rejected" | "error";

/** The result of one request, everything the log line needs. */
export interface Decision {
  outcome: Outcome;
  command: Command | undefined;
  user?: string;
  domain?: string;
  method?: "password" | "token";
  reason: Reason;
  /** Extra words for the log, such as the database error; never a secret. */
  detail?: string;
  /** "hit" when a cached verification spared bcrypt. */
  cache?: "hit" | "miss";
  /** True when the database returned the rows this decision used. */
  queried?: boolean;
}

/** How often the schema is read again, to notice a Mastodon upgrade. */
export const SCHEMA_REFRESH_MS = 60_000;

/**
 * Access tokens are 43 URL-safe base64 characters in current Mastodon
 * (Doorkeeper's default) and 64 hex characters in some older setups. A
 * password of another form is never looked up as a token.
 */
const TOKEN_FORM = /^[A-Za-z0-9_-]{32,128}$/;

export interface AuthenticatorOptions {
  config: Config;
  database: Database;
  logger: Logger;
}

/** Decides requests against the database with the configured rules. */
export class Authenticator {
  readonly #config: Config;
  readonly #database: Database;
  readonly #logger: Logger;
  readonly #cache: PasswordCache;
  #features: SchemaFeatures | undefined;
  #featuresReadAt = 0;
  /** The features last written to the log, or "" before the first detection. */
  #announced: string | undefined;
  #detecting: Promise<SchemaFeatures> | undefined;

  constructor(options: AuthenticatorOptions) {
    this.#config = options.config;
    this.#database = options.database;
    this.#logger = options.logger;
    this.#cache = new PasswordCache({
      ttlSeconds: options.config.auth.cacheTtlSeconds,
      maxEntries: options.config.auth.cacheMaxEntries,
    });
  }

  /** The schema features found by the last detection, if any. */
  get features(): SchemaFeatures | undefined {
    return this.#features;
  }

  /** The verified-password cache, for reports and tests. */
  get cache(): PasswordCache {
    return this.#cache;
  }

  /**
   * Detects the schema now, for the start-up line; errors are logged, not
   * thrown. A later detection logs the features once they are known.
   */
  async prepare(options: { deadline: number; signal?: AbortSignal }): Promise<boolean> {
    try {
      await this.#schema(options, true);
      return true;
    } catch (error) {
      this.#announced = "";
      // A failure caused by stopping, such as a connection closed on the way
      // out, is no news for the admin.
      if (!options.signal?.aborted) {
        this.#logger.repeated("error", "database", "error", describeError(error));
      }
      return false;
    }
  }

  /**
   * Decides one request. Database failures become an `error` decision; any
   * other exception is a bug and propagates to the request loop.
   */
  async decide(
    parsed: Request | MalformedRequest,
    options: { deadline: number; signal?: AbortSignal },
  ): Promise<Decision> {
    if (isMalformed(parsed)) {
      return {
        outcome: "rejected",
        command: parsed.command,
        user: parsed.user,
        domain: parsed.domain,
        reason: "malformed-request",
        detail: parsed.malformed,
      };
    }
    const base = { command: parsed.command, user: parsed.user, domain: parsed.domain };
    if (parsed.command !== "auth" && parsed.command !== "isuser") {
      return { ...base, outcome: "rejected", reason: "read-only" };
    }
    const domains = this.#config.domains;
    if (domains.length > 0 && !domains.includes(parsed.domain.toLowerCase())) {
      return {
        ...base,
        outcome: "rejected",
        method: parsed.command === "auth" ? "password" : undefined,
        reason: "foreign-domain",
      };
    }

    try {
      const features = await this.#schema(options, false);
      if (parsed.command === "isuser") {
        const row = await findAccount(this.#database, parsed.user, features, {
          ...options,
          withPassword: false,
        });
        const block = accountBlock(row, { movedAccounts: this.#config.auth.movedAccounts });
        // The two-factor requirement only limits logging in; the account exists.
        if (block === undefined || block === "two-factor-setup-required") {
          return { ...base, outcome: "accepted", reason: "ok", queried: true };
        }
        return { ...base, outcome: "rejected", reason: block, queried: true };
      }
      const decision = await this.#authenticate(
        parsed.user,
        parsed.password,
        features,
        options,
        base,
      );
      return { ...decision, queried: true };
    } catch (error) {
      if (error instanceof SchemaError || error instanceof DatabaseError) {
        if (error instanceof SchemaError || error.kind === "schema") this.#features = undefined;
        return {
          ...base,
          outcome: "error",
          method: parsed.command === "auth" ? "password" : undefined,
          reason: "database-unavailable",
          detail: error.message,
        };
      }
      throw error;
    }
  }

  async #authenticate(
    user: string,
    password: Uint8Array,
    features: SchemaFeatures,
    options: { deadline: number; signal?: AbortSignal },
    base: Pick<Decision, "command" | "user" | "domain">,
  ): Promise<Decision> {
    const auth = this.#config.auth;
    const tokenDigest = auth.accessTokens ? digestIfToken(password, features) : undefined;
    const row = await findAccount(this.#database, user, features, {
      ...options,
      withPassword: true,
      tokenDigest,
    });
    const block = accountBlock(row, { movedAccounts: auth.movedAccounts });
    const tokenState = row?.token_state ?? null;

    if (tokenState === "valid") {
      if (block !== undefined) {
        return { ...base, outcome: "rejected", method: "token", reason: block };
      }
      return { ...base, outcome: "accepted", method: "token", reason: "ok" };
    }

    // A password of a token's form that matched a revoked or expired token
    // of this user is reported as a token attempt.
    const method = tokenState === null ? "password" as const : "token" as const;
    const hash = row?.encrypted_password ?? "";
    const userId = row?.user_id ?? undefined;
    const twoFactorBlocks = row?.two_factor === true && !auth.twoFactorPassword;
    // Only a login that can be accepted uses the cache, so only accepted
    // passwords are ever cached.
    const cacheable = this.#cache.enabled && userId !== undefined && hash !== "" &&
      block === undefined && !twoFactorBlocks;
    let cache: "hit" | "miss" | undefined;
    let verified = false;
    if (cacheable) {
      verified = this.#cache.has(userId, hash, password);
      cache = verified ? "hit" : "miss";
    }
    if (!verified) {
      // Every password login that misses the cache costs one bcrypt run, also
      // for unknown users and empty hashes, so the time does not show which.
      verified = await verifyPassword(password, hash);
    }

    const decision = { ...base, method };
    if (block !== undefined) return { ...decision, outcome: "rejected", reason: block };
    if (hash === "") return { ...decision, outcome: "rejected", reason: "external-account" };
    if (!verified) {
      const reason = tokenState === "revoked"
        ? "token-revoked"
        : tokenState === "expired"
        ? "token-expired"
        : "wrong-password";
      return { ...decision, outcome: "rejected", reason, cache };
    }
    if (twoFactorBlocks) {
      return { ...base, method: "password", outcome: "rejected", reason: "two-factor-required" };
    }
    if (cache === "miss") this.#cache.add(userId!, hash, password);
    return { ...base, method: "password", outcome: "accepted", reason: "ok", cache };
  }

  async #schema(
    options: { deadline: number; signal?: AbortSignal },
    force: boolean,
  ): Promise<SchemaFeatures> {
    const now = performance.now();
    if (!force && this.#features !== undefined && now - this.#featuresReadAt < SCHEMA_REFRESH_MS) {
      return this.#features;
    }
    // Requests that arrive while the schema is read wait for that same read.
    this.#detecting ??= detectSchema(this.#database, {
      ...options,
      accessTokens: this.#config.auth.accessTokens,
    }).finally(() => this.#detecting = undefined);
    const features = await untilAborted(this.#detecting, options.signal);
    const described = describeFeatures(features);
    // The first detection goes on the start-up line, which the caller writes.
    if (this.#announced !== undefined && this.#announced !== described) {
      this.#logger.info(`schema detected: ${described}`);
    }
    if (this.#announced !== described && !features.sha256 && this.#config.auth.accessTokens) {
      this.#logger.warn(
        `PostgreSQL ${features.serverVersion} has no sha256(), so access tokens are not accepted; ` +
          `PostgreSQL 11 or later is needed for token logins`,
      );
    }
    this.#announced = described;
    this.#features = features;
    this.#featuresReadAt = now;
    return features;
  }
}

/**
 * Returns the hex digest used to look up a password as an access token, or
 * `undefined` when the password cannot be a token.
 */
function digestIfToken(
  password: Uint8Array,
  features: SchemaFeatures,
): string | undefined {
  if (password.length < 32 || password.length > 128) return undefined;
  if (!features.sha256 || !TOKEN_FORM.test(String.fromCharCode(...password))) return undefined;
  return createHash("sha256").update(password).digest("hex");
}

/** Waits for `promise`, or rejects with a {@linkcode DatabaseError} once `signal` aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new DatabaseError("closed", "the request was abandoned"));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Returns the message of any error, for a log line. */
export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
