/**
 * Sample counts, warm-ups and targets of the benchmark, shared by the run
 * and the page it writes.
 *
 * @module
 */

/** Requests or spawns per measurement. The warm-up ones come first and are not timed. */
export const PLAN = {
  /** Fresh spawns of the program, each timed to its first `isuser` reply. */
  coldStart: { warmup: 1, count: 10 },
  isuser: { warmup: 1_000, count: 5_000 },
  /**
   * `isuser` requests that each follow a pause, after the back-to-back ones.
   * A request after a pause finds the program and PostgreSQL idle.
   */
  isuserAfterPause: { count: 100, pauseMs: 50 },
  /**
   * Password logins of users not yet in the cache. The warm-up login makes
   * the program compile hash-wasm's WebAssembly module, which happens once
   * per process.
   */
  authCold: { warmup: 1, count: 30 },
  cached: { warmup: 100, count: 2_000 },
  token: { warmup: 100, count: 2_000 },
  /** Mixed requests before the peak RSS (VmHWM) is read. */
  mixedRequests: 10_000,
  /** Continuous mixed requests after those, with VmRSS read at a fixed interval. */
  steadyRunMs: 60_000,
  rssIntervalMs: 5_000,
  /** Time the program gets to start and detect the schema before its start-up RSS is read. */
  startupIdleMs: 1_000,
  /** Mixed requests per V8 flag tried in the memory experiments, with memory read halfway. */
  experimentRequests: 10_000,
} as const;

/** The steady run is flat when its last VmRSS is within this share of its first. */
export const FLAT_TOLERANCE = 0.05;

/** Targets, each compared with the figure in the table of docs/benchmarks.md. */
export const TARGETS = {
  isuserP50Ms: 0.25,
  authColdToBcryptRatio: 1.03,
  cachedP50Ms: 1,
  tokenP50Ms: 1,
  coldStartP50Ms: 150,
  peakRssMb: 48,
} as const;
