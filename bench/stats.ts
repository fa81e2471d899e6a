/**
 * Percentiles of timing samples and a seeded random number generator, so
 * that two runs of the benchmark send the same requests.
 *
 * @module
 */

/** Percentiles of one series of samples, in the unit of the samples. */
export interface Summary {
  count: number;
  p50: number;
  p99: number;
  min: number;
  max: number;
}

/**
 * Returns the nearest-rank percentile `p` (0 to 100) of `sorted`, which must
 * be sorted in ascending order and not be empty.
 */
export function percentile(sorted: readonly number[], p: number): number {
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

/** Summarizes `samples`. Throws on an empty list, which means that a phase did not run. */
export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) throw new Error("cannot summarize an empty list of samples");
  const sorted = samples.toSorted((a, b) => a - b);
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    min: sorted[0],
    max: sorted[sorted.length - 1],
  };
}

/**
 * Returns a generator of uniform numbers in [0, 1) from a non-zero 32-bit
 * seed, using Marsaglia's xorshift32 (shifts 13, 17, 5).
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 4294967296;
  };
}
