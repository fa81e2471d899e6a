/**
 * In-process probe: times `Authenticator.decide` without pipes or the
 * request loop, for `isuser`, cold and cached password `auth` and token
 * `auth`, so that the figures through the pipes can be split into the
 * decision and the rest. Cold logins alternate with bcrypt alone in this
 * process, as in the benchmark process. The job, which contains the access
 * token, arrives as JSON on stdin.
 *
 * @module
 */

import { bcryptVerify } from "hash-wasm";
import { Authenticator } from "../../lib/authenticator.ts";
import { PasswordCache } from "../../lib/cache.ts";
import { loadConfig } from "../../lib/config.ts";
import { Database } from "../../lib/database.ts";
import { Logger } from "../../lib/log.ts";
import { parseRequest } from "../../lib/request.ts";
import { fixture } from "../../tests/support/hashes.ts";
import { PASSWORD } from "../../tests/support/mastodon.ts";
import { generatedUsername, HASH_FIXTURE } from "../setup.ts";
import { seededRandom, summarize } from "../stats.ts";
import { writeJson } from "./output.ts";

/** The job the benchmark sends on stdin. */
export interface DecisionsJob {
  configPath: string;
  domain: string;
  /** Number of generated accounts, from which `isuser` picks at random. */
  generatedAccounts: number;
  seed: number;
  cachedUser: string;
  tokenUser: string;
  token: string;
  /** Users not logged in before, for cold logins; the first `coldWarmup` are not timed. */
  coldUsers: string[];
  coldWarmup: number;
  /** The `isuser` series with a pause before each decision. */
  pauses: { count: number; pauseMs: number };
  warmup: number;
  count: number;
}

const STEP_TIMEOUT_MS = 10_000;

const job: DecisionsJob = JSON.parse(await new Response(Deno.stdin.readable).text());
const config = await loadConfig(job.configPath);
const database = new Database(config.database, { applicationName: "auth-mastodon-bench" });
const authenticator = new Authenticator({
  config,
  database,
  logger: new Logger({ level: config.log.level }),
});
const encoder = new TextEncoder();

/** Decides `request` and returns the time taken, in ms. Throws unless it is accepted. */
async function timeDecision(request: string): Promise<number> {
  const frame = encoder.encode(request);
  const started = performance.now();
  const decision = await authenticator.decide(parseRequest(frame), {
    deadline: performance.now() + STEP_TIMEOUT_MS,
  });
  const elapsed = performance.now() - started;
  if (decision.outcome !== "accepted") {
    throw new Error(
      `${decision.command} ${decision.user} was ${decision.outcome}: ${decision.reason}`,
    );
  }
  return elapsed;
}

/**
 * Decides `warmup + count` requests made by `nextRequest`, and returns the
 * times of the last `count`, in ms.
 */
async function time(nextRequest: () => string): Promise<number[]> {
  const samples: number[] = [];
  for (let index = 0; index < job.warmup + job.count; index++) {
    const elapsed = await timeDecision(nextRequest());
    if (index >= job.warmup) samples.push(elapsed);
  }
  return samples;
}

/** Decides `isuser` requests made by `nextRequest`, each after a pause, and returns their times. */
async function timeAfterPauses(nextRequest: () => string): Promise<number[]> {
  const samples: number[] = [];
  for (let index = 0; index < job.pauses.count; index++) {
    await new Promise((resolve) => setTimeout(resolve, job.pauses.pauseMs));
    samples.push(await timeDecision(nextRequest()));
  }
  return samples;
}

/** Times `PasswordCache.add`, which a cold login that succeeds runs after bcrypt. */
function timeCacheAdds(): number[] {
  const cache = new PasswordCache({
    ttlSeconds: config.auth.cacheTtlSeconds,
    maxEntries: config.auth.cacheMaxEntries,
  });
  const { password, hash } = fixture(HASH_FIXTURE);
  const samples: number[] = [];
  for (let index = 0; index < job.coldUsers.length; index++) {
    const started = performance.now();
    cache.add(String(index), hash, password);
    const elapsed = performance.now() - started;
    if (index >= job.coldWarmup) samples.push(elapsed);
  }
  return samples;
}

/** Times cold password logins, each followed by bcrypt alone on the same hash. */
async function timeColdLogins(): Promise<{ cold: number[]; bcryptAlone: number[] }> {
  const { password, hash } = fixture(HASH_FIXTURE);
  const cold: number[] = [];
  const bcryptAlone: number[] = [];
  for (const [index, user] of job.coldUsers.entries()) {
    const coldMs = await timeDecision(`auth:${user}:${job.domain}:${PASSWORD}`);
    const started = performance.now();
    if (!await bcryptVerify({ password, hash })) throw new Error("the fixture hash did not verify");
    const bcryptMs = performance.now() - started;
    if (index < job.coldWarmup) continue;
    cold.push(coldMs);
    bcryptAlone.push(bcryptMs);
  }
  return { cold, bcryptAlone };
}

const random = seededRandom(job.seed);
const randomUser = () => generatedUsername(1 + Math.floor(random() * job.generatedAccounts));
const isuser = await time(() => `isuser:${randomUser()}:${job.domain}`);
const isuserAfterPause = await timeAfterPauses(() => `isuser:${randomUser()}:${job.domain}`);
const coldLogins = await timeColdLogins();
const cacheAdds = timeCacheAdds();
// The first cached request is a miss that runs bcrypt, and it counts as warm-up.
const cached = await time(() => `auth:${job.cachedUser}:${job.domain}:${PASSWORD}`);
const token = await time(() => `auth:${job.tokenUser}:${job.domain}:${job.token}`);
await database.close();

await writeJson({
  isuser: summarize(isuser),
  isuserAfterPause: summarize(isuserAfterPause),
  cold: summarize(coldLogins.cold),
  bcryptAlone: summarize(coldLogins.bcryptAlone),
  cacheAdd: summarize(cacheAdds),
  cached: summarize(cached),
  token: summarize(token),
});
