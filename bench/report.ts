/**
 * Renders docs/benchmarks.md from the figures of one benchmark run.
 *
 * @module
 */

import type { Machine } from "./machine.ts";
import { FLAT_TOLERANCE, PLAN, TARGETS } from "./plan.ts";
import type { ResidentMemory } from "./memory.ts";
import type { Summary } from "./stats.ts";
import { GENERATED_ACCOUNTS, HASH_FIXTURE } from "./setup.ts";
import { MIXED_BCRYPT_EVERY } from "./workload.ts";

/** The cold start split into parts, each timed in separate fresh processes. */
export interface FirstRequestParts {
  /** Spawn to the reply of a script that imports nothing. */
  denoStart: Summary;
  /** Spawn to the reply of a script that imports main.ts. */
  moduleGraph: Summary;
  config: Summary;
  /** TCP connection, SCRAM login and `SELECT 1`. */
  connect: Summary;
  schema: Summary;
  lookup: Summary;
}

/** `Authenticator.decide` timed in-process, without pipes. */
export interface DecisionSummaries {
  isuser: Summary;
  isuserAfterPause: Summary;
  cold: Summary;
  /** bcrypt alone in the probe process, alternating with the cold logins. */
  bcryptAlone: Summary;
  cacheAdd: Summary;
  cached: Summary;
  token: Summary;
}

export interface MemoryStage extends ResidentMemory {
  stage: string;
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
}

export interface MemoryExperiment {
  /** DENO_V8_FLAGS, or "" for none. */
  flags: string;
  atStart: ResidentMemory;
  halfway: ResidentMemory;
  afterRequests: ResidentMemory;
  seconds: number;
}

export interface BenchResults {
  machine: Machine;
  startedAt: Date;
  durationSeconds: number;
  /** 1-minute load average when the run ended. */
  loadAverageAfter: number;
  /** Local accounts with a login in the database. */
  accounts: number;
  coldStart: Summary;
  startParts: FirstRequestParts;
  isuser: Summary;
  isuserPerSecond: number;
  isuserAfterPause: Summary;
  authCold: Summary;
  bcryptAlone: Summary;
  cached: Summary;
  token: Summary;
  pipeRoundTrip: Summary;
  pipeRoundTripAfterPause: Summary;
  decisions: DecisionSummaries;
  memory: {
    atStart: ResidentMemory;
    afterFirstIsuser: ResidentMemory;
    afterFirstBcrypt: ResidentMemory;
    afterMixed: ResidentMemory;
    mixedSeconds: number;
    series: { seconds: number; vmRssKb: number }[];
    steadyRequests: number;
    atEnd: ResidentMemory;
  };
  stages: MemoryStage[];
  experiments: MemoryExperiment[];
}

/** Marks the hand-written notes that a new run keeps from the previous page. */
const NOTES_START = "<!-- notes: written by hand; deno task bench keeps this block -->";
const NOTES_END = "<!-- end of notes -->";

const DEFAULT_NOTES = `No notes yet. Write findings here; \`deno task bench\` keeps this block
when it rewrites the page.`;

/** Formats milliseconds with three significant digits or more. */
function formatMs(value: number): string {
  if (value < 1) return `${value.toFixed(3)} ms`;
  if (value < 10) return `${value.toFixed(2)} ms`;
  return `${value.toFixed(1)} ms`;
}

function formatMib(kb: number): string {
  return `${(kb / 1024).toFixed(1)} MiB`;
}

function formatBytesAsMib(bytes: number): string {
  return formatMib(bytes / 1024);
}

function formatCount(value: number): string {
  return value.toLocaleString("en-US");
}

function formatStatus(met: boolean): string {
  return met ? "met" : "**not met**";
}

function formatP50P99(summary: Summary): string {
  return `${formatMs(summary.p50)} (p99 ${formatMs(summary.p99)})`;
}

/** Returns the lines of the notes block of `previous`, or the default notes. */
function keptNotes(previous: string): string {
  const start = previous.indexOf(NOTES_START);
  const end = previous.indexOf(NOTES_END);
  if (start === -1 || end <= start) return DEFAULT_NOTES;
  return previous.slice(start + NOTES_START.length, end).trim();
}

/** Returns the page for `results`, keeping the notes block of `previous`. */
export function renderPage(results: BenchResults, previous: string): string {
  const ratio = results.authCold.p50 / results.bcryptAlone.p50;
  const peakKb = results.memory.afterMixed.vmHwmKb;
  const checks = {
    isuser: results.isuser.p50 <= TARGETS.isuserP50Ms,
    ratio: ratio <= TARGETS.authColdToBcryptRatio,
    cached: results.cached.p50 <= TARGETS.cachedP50Ms,
    token: results.token.p50 <= TARGETS.tokenP50Ms,
    coldStart: results.coldStart.p50 <= TARGETS.coldStartP50Ms,
    rss: peakKb / 1024 <= TARGETS.peakRssMb,
  };

  return [
    header(results),
    targetTable(results, ratio, checks),
    limits(results, checks),
    breakdowns(results),
    memorySection(results, previous),
  ].join("\n\n") + "\n";
}

function header(results: BenchResults): string {
  const machine = results.machine;
  return `# Benchmarks

Written by \`deno task bench\` (bench/run.ts), which took ${results.durationSeconds.toFixed(0)} s.
Run on ${results.startedAt.toISOString().replace(/\.\d+Z$/, "Z")}.

| machine     |                                                          |
| ----------- | -------------------------------------------------------- |
| CPU         | ${machine.cpu} |
| cores       | ${machine.cores} |
| memory      | ${machine.memoryGiB.toFixed(1)} GiB |
| OS, kernel  | ${machine.os}, Linux ${machine.kernel} |
| Deno        | ${machine.deno} (V8 ${machine.v8}) |
| PostgreSQL  | ${machine.postgres} |
| load        | ${machine.loadAverage.toFixed(2)} at the start, ${
    results.loadAverageAfter.toFixed(2)
  } at the end (1-minute load average, other jobs on the machine included) |

## How it was measured

- **Database**: a throwaway PostgreSQL cluster on the same machine with Mastodon main's tables,
  the test accounts of tests/support/mastodon.ts and ${formatCount(GENERATED_ACCOUNTS)} generated
  accounts, ${
    formatCount(results.accounts)
  } local accounts with a login in all. The generated users share
  one cost-10 bcrypt hash (fixture \`${HASH_FIXTURE}\` of tests/fixtures/hashes.json, made by
  Ruby's bcrypt), and one of them has an access token. \`ANALYZE\` ran after the inserts.
- **Program**: started as ejabberd starts it, a child process with piped stdin, stdout and stderr,
  with the arguments of \`deno task start\` (\`Program\` of tests/support/program.ts). It connects
  over TCP to 127.0.0.1 as the read-only role, with \`[log] level = warn\`, so it writes no line
  per request, and the default cache settings (\`cache_ttl = 900\`, \`cache_max_entries = 10000\`).
- **Timing**: one request in flight at a time, as ejabberd sends them. Each sample is
  \`performance.now()\` around writing the framed request and reading the 4-byte reply in the
  benchmark process, so it includes the benchmark's own pipe handling. Every reply is checked.
  Percentiles are nearest-rank. The series are back to back, except one \`isuser\` series that
  pauses ${PLAN.isuserAfterPause.pauseMs} ms before each request, so that the program and
  PostgreSQL are idle when it arrives.
- **Warm-up, not counted**: ${PLAN.coldStart.warmup} spawn before the cold starts, and
  ${formatCount(PLAN.isuser.warmup)} \`isuser\` requests before that series. Before the cold logins,
  ${PLAN.authCold.warmup} password login and ${PLAN.authCold.warmup} bcrypt run, because the first
  bcrypt of a process compiles hash-wasm's WebAssembly. ${PLAN.cached.warmup} requests before each
  of the cached and token series. The cached series logs in as the user of the last cold login,
  which put the password in the cache.
- **bcrypt alone**: \`bcryptVerify\` of \`npm:hash-wasm\` at the version pinned in deno.json, in
  the benchmark process, on the same hash and password. Its runs alternate with the cold logins,
  so load changes during the run affect both alike.
- No time is asserted. A missed target is reported below, and the run still succeeds.`;
}

function targetTable(
  results: BenchResults,
  ratio: number,
  checks: Record<string, boolean>,
): string {
  const peakKb = results.memory.afterMixed.vmHwmKb;
  const rows = [
    [
      "`isuser` through the pipes, p50",
      formatP50P99(results.isuser),
      formatCount(results.isuser.count),
      `at most ${TARGETS.isuserP50Ms} ms`,
      formatStatus(checks.isuser),
    ],
    [
      "password `auth`, cold cache (bcrypt), p50 / bcrypt alone, p50",
      `${ratio.toFixed(3)} × (${formatMs(results.authCold.p50)} / ${
        formatMs(results.bcryptAlone.p50)
      })`,
      `${results.authCold.count} + ${results.bcryptAlone.count}`,
      `at most ${TARGETS.authColdToBcryptRatio} ×`,
      formatStatus(checks.ratio),
    ],
    [
      "password `auth`, cached, p50",
      formatP50P99(results.cached),
      formatCount(results.cached.count),
      `at most ${TARGETS.cachedP50Ms} ms`,
      formatStatus(checks.cached),
    ],
    [
      "access token `auth`, p50",
      formatP50P99(results.token),
      formatCount(results.token.count),
      `at most ${TARGETS.tokenP50Ms} ms`,
      formatStatus(checks.token),
    ],
    [
      "cold start, spawn to the first `isuser` reply, p50",
      `${formatMs(results.coldStart.p50)} (max ${formatMs(results.coldStart.max)})`,
      `${results.coldStart.count} spawns`,
      `at most ${TARGETS.coldStartP50Ms} ms`,
      formatStatus(checks.coldStart),
    ],
    [
      `peak RSS (VmHWM) after ${formatCount(PLAN.mixedRequests)} mixed requests`,
      formatMib(peakKb),
      "1 process",
      `at most ${TARGETS.peakRssMb} MB (read as MiB)`,
      formatStatus(checks.rss),
    ],
  ];
  const other = [
    [
      "`isuser` requests per second, sequential",
      `${formatCount(Math.round(results.isuserPerSecond))}/s`,
      formatCount(results.isuser.count),
    ],
    [
      `\`isuser\` after a ${PLAN.isuserAfterPause.pauseMs} ms pause`,
      formatP50P99(results.isuserAfterPause),
      formatCount(results.isuserAfterPause.count),
    ],
    ["password `auth`, cold cache", formatP50P99(results.authCold), String(results.authCold.count)],
    [
      "bcrypt alone (hash-wasm, cost 10)",
      formatP50P99(results.bcryptAlone),
      String(results.bcryptAlone.count),
    ],
    [
      `VmHWM at the end of the ${PLAN.steadyRunMs / 1000} s run`,
      formatMib(results.memory.atEnd.vmHwmKb),
      "1 process",
    ],
  ];
  return `## Results

| figure | measured | samples | target | status |
| ------ | -------- | ------- | ------ | ------ |
${rows.map((row) => `| ${row.join(" | ")} |`).join("\n")}

| other figures | measured | samples |
| ------------- | -------- | ------- |
${other.map((row) => `| ${row.join(" | ")} |`).join("\n")}`;
}

function limits(results: BenchResults, checks: Record<string, boolean>): string {
  const lines: string[] = [];
  const pipe = results.pipeRoundTrip.p50;
  const parts = results.startParts;
  if (!checks.isuser) {
    const parts = pipe + results.decisions.isuser.p50;
    const rest = results.isuser.p50 - parts;
    lines.push(
      `- **\`isuser\`**: a pipe round trip to a Deno script that replies without looking anything ` +
        `up takes ${formatMs(pipe)} p50, and the decision alone in-process (one query over TCP) ` +
        `${formatMs(results.decisions.isuser.p50)} p50, together ${formatMs(parts)}. ` +
        (rest > 0
          ? `The other ${formatMs(rest)} are not explained by these measurements.`
          : "These account for all of it."),
    );
  }
  if (!checks.ratio) {
    const decisions = results.decisions;
    const extra = results.authCold.p50 - results.bcryptAlone.p50;
    const explained = results.pipeRoundTripAfterPause.p50 + decisions.isuserAfterPause.p50 +
      decisions.cacheAdd.p50;
    const rest = extra - explained;
    lines.push(
      `- **cold password \`auth\`**: it took ${formatMs(extra)} more than bcrypt alone at p50. ` +
        `Its request and lookup come after the program and PostgreSQL were idle for a bcrypt's ` +
        `time. After a ${PLAN.isuserAfterPause.pauseMs} ms pause, the pipe round trip took ` +
        `${formatMs(results.pipeRoundTripAfterPause.p50)} and an in-process \`isuser\` decision ` +
        `${formatMs(decisions.isuserAfterPause.p50)}, against ` +
        `${formatMs(results.pipeRoundTrip.p50)} and ${formatMs(decisions.isuser.p50)} back to ` +
        `back. Storing the password in the cache took ${formatMs(decisions.cacheAdd.p50)}. ` +
        (rest > 0
          ? `The other ${formatMs(rest)} are not explained by these measurements.`
          : "These account for all of it."),
    );
  }
  if (!checks.cached) {
    lines.push(
      `- **cached \`auth\`**: the decision in-process takes ${
        formatMs(results.decisions.cached.p50)
      } p50, ` +
        `the pipe round trip ${formatMs(pipe)}.`,
    );
  }
  if (!checks.token) {
    lines.push(
      `- **token \`auth\`**: the decision in-process takes ${
        formatMs(results.decisions.token.p50)
      } p50, ` +
        `the pipe round trip ${formatMs(pipe)}.`,
    );
  }
  if (!checks.coldStart) {
    lines.push(
      `- **cold start**: Deno's start-up alone (an empty script with the same flags) takes ` +
        `${formatMs(parts.denoStart.p50)} p50 and loading main.ts's modules ` +
        `${
          formatMs(parts.moduleGraph.p50 - parts.denoStart.p50)
        } more; the first connection with its ` +
        `SCRAM login takes ${formatMs(parts.connect.p50)}, the schema detection ` +
        `${formatMs(parts.schema.p50)} and the lookup ${formatMs(parts.lookup.p50)}.`,
    );
  }
  if (!checks.rss) {
    const empty = results.stages[0];
    const smallest = results.experiments.toSorted((a, b) =>
      a.afterRequests.vmHwmKb - b.afterRequests.vmHwmKb
    )[0];
    lines.push(
      `- **peak RSS**: an empty Deno script already has ${formatMib(empty.vmRssKb)} resident ` +
        `(${
          formatMib(empty.executableRssKb)
        } of it pages of the deno executable). The program has ` +
        `${formatMib(results.memory.atStart.vmRssKb)} at start-up before any request ` +
        `(${formatMib(results.memory.atStart.rssFileKb)} file-backed, ${
          formatMib(results.memory.atStart.rssAnonKb)
        } ` +
        `anonymous), and ${formatMib(results.memory.afterMixed.vmRssKb)} after ` +
        `${formatCount(PLAN.mixedRequests)} requests. The lowest peak of the V8 flags tried was ` +
        `${formatMib(smallest.afterRequests.vmHwmKb)}, with ` +
        `${smallest.flags === "" ? "no flags" : `\`${smallest.flags}\``}.`,
    );
  }
  if (lines.length === 0) return "## What limits the unmet targets\n\nEvery target was met.";
  return `## What limits the unmet targets\n\n${lines.join("\n")}`;
}

function breakdowns(results: BenchResults): string {
  const parts = results.startParts;
  const sum = parts.moduleGraph.p50 + parts.config.p50 + parts.connect.p50 + parts.schema.p50 +
    parts.lookup.p50;
  const partRows = [
    ["Deno start-up: spawn to the reply of an empty script", parts.denoStart],
    ["spawn to the reply of a script that imports main.ts", parts.moduleGraph],
    ["reading the configuration file", parts.config],
    ["first connection: TCP, SCRAM-SHA-256 login and `SELECT 1`", parts.connect],
    ["schema detection (two catalog queries)", parts.schema],
    ["first account lookup", parts.lookup],
  ] as const;
  const decisions = results.decisions;
  const requestRows = [
    summaryRow("pipe round trip to a Deno script that replies true at once", results.pipeRoundTrip),
    summaryRow(
      `the same after a ${PLAN.isuserAfterPause.pauseMs} ms pause`,
      results.pipeRoundTripAfterPause,
    ),
    summaryRow("`isuser` decision in-process, no pipes", decisions.isuser),
    summaryRow(
      `the same after a ${PLAN.isuserAfterPause.pauseMs} ms pause`,
      decisions.isuserAfterPause,
    ),
    summaryRow("cold password decision in-process (bcrypt)", decisions.cold),
    summaryRow("bcrypt alone in the same process, alternating with those", decisions.bcryptAlone),
    summaryRow("storing a verified password in the cache (HMAC-SHA-256)", decisions.cacheAdd),
    summaryRow("cached password decision in-process", decisions.cached),
    summaryRow("token decision in-process", decisions.token),
  ];
  return `## Breakdowns

### Cold start

Each part was timed in its own fresh process, ${parts.denoStart.count} times after
${PLAN.coldStart.warmup} warm-up. The benchmark timed the first two from spawn to reply, and the
probe bench/probes/first_request.ts timed the last four inside the process with
\`performance.now()\`, using lib/ as the program does. The program's cold start, ${
    formatMs(results.coldStart.p50)
  } p50, compares
with the sum of the module graph and the later parts, ${formatMs(sum)}.

| part | p50 | p99 |
| ---- | --- | --- |
${
    partRows.map(([name, summary]) =>
      `| ${name} | ${formatMs(summary.p50)} | ${formatMs(summary.p99)} |`
    ).join("\n")
  }

### Requests

The same request kinds, timed in other ways, to separate the pipes from the decision. The round
trip to the script is timed with the client of bench/child.ts, which reads stdout without the
per-read timer of \`Program\`.

| measurement | p50 | p99 | samples |
| ----------- | --- | --- | ------- |
${requestRows.join("\n")}

After a ${PLAN.isuserAfterPause.pauseMs} ms pause, the pipe round trip took ${
    formatMs(results.pipeRoundTripAfterPause.p50)
  } instead of ${formatMs(results.pipeRoundTrip.p50)}, and the \`isuser\` decision ${
    formatMs(decisions.isuserAfterPause.p50)
  } instead of ${formatMs(decisions.isuser.p50)}. Their sum, ${
    formatMs(results.pipeRoundTripAfterPause.p50 + decisions.isuserAfterPause.p50)
  }, compares with ${
    formatMs(results.isuserAfterPause.p50)
  } for an \`isuser\` through the pipes after the same pause.

The in-process figures come from bench/probes/decisions.ts, a fresh process with the start task's
flags that calls \`Authenticator.decide\` directly, after ${
    formatCount(PLAN.isuser.warmup)
  } warm-up decisions of each kind, but ${PLAN.authCold.warmup} before the cold logins.`;
}

function summaryRow(name: string, summary: Summary): string {
  return `| ${name} | ${formatMs(summary.p50)} | ${formatMs(summary.p99)} | ${
    formatCount(summary.count)
  } |`;
}

function memoryRow(name: string, memory: ResidentMemory): string {
  const cells = [
    name,
    formatMib(memory.vmRssKb),
    formatMib(memory.vmHwmKb),
    formatMib(memory.rssAnonKb),
    formatMib(memory.rssFileKb),
    formatMib(memory.executableRssKb),
  ];
  return `| ${cells.join(" | ")} |`;
}

function memorySection(results: BenchResults, previous: string): string {
  const memory = results.memory;
  const first = memory.series[0].vmRssKb;
  const last = memory.series[memory.series.length - 1].vmRssKb;
  const change = (last - first) / first;
  const flat = Math.abs(change) <= FLAT_TOLERANCE;
  const series = memory.series.map((sample) => (sample.vmRssKb / 1024).toFixed(1)).join(", ");
  const later = memory.series.slice(1).map((sample) => sample.vmRssKb);
  const stageRows = results.stages.map((stage) => {
    const cells = [
      stage.stage,
      formatMib(stage.vmRssKb),
      formatMib(stage.rssAnonKb),
      formatMib(stage.rssFileKb),
      formatMib(stage.executableRssKb),
      `${formatBytesAsMib(stage.heapUsedBytes)} / ${formatBytesAsMib(stage.heapTotalBytes)}`,
      formatBytesAsMib(stage.externalBytes),
    ];
    return `| ${cells.join(" | ")} |`;
  });
  const experimentRows = results.experiments.map((experiment) => {
    const cells = [
      experiment.flags === "" ? "(none)" : `\`${experiment.flags}\``,
      formatMib(experiment.atStart.vmRssKb),
      formatMib(experiment.halfway.vmRssKb),
      formatMib(experiment.afterRequests.vmRssKb),
      formatMib(experiment.afterRequests.vmHwmKb),
      `${experiment.seconds.toFixed(1)} s`,
    ];
    return `| ${cells.join(" | ")} |`;
  });

  return `## Memory: where it goes and what was tried

RSS is VmRSS, and peak RSS VmHWM, from /proc/PID/status. RssFile is the resident pages of mapped
files, and "deno executable" the part of them mapped from the deno binary (summed from
/proc/PID/smaps), which all processes running that binary share. RssAnon is the process's own
memory: the V8 heap, WebAssembly memory and native allocations. The kernel keeps the status
counters approximately, for scalability, and smaps walks the page tables (Linux's
Documentation/filesystems/proc.rst), so the deno executable column can exceed RssFile slightly.

### The program

The mixed requests are 50 % \`isuser\` of a random account, 10 % \`isuser\` of an unknown name,
20 % cached password logins of 50 users and 20 % token logins. Every ${MIXED_BCRYPT_EVERY}th request
is a bcrypt run instead, either a new user's first login or a wrong password. The ${
    formatCount(PLAN.mixedRequests)
  } mixed requests took ${memory.mixedSeconds.toFixed(1)} s.

| when | VmRSS | VmHWM | RssAnon | RssFile | deno executable |
| ---- | ----- | ----- | ------- | ------- | --------------- |
${memoryRow(`${PLAN.startupIdleMs / 1000} s after spawn, no request yet`, memory.atStart)}
${memoryRow("after the first `isuser`", memory.afterFirstIsuser)}
${memoryRow("after the first password `auth` (bcrypt)", memory.afterFirstBcrypt)}
${memoryRow(`after ${formatCount(PLAN.mixedRequests)} mixed requests`, memory.afterMixed)}
${memoryRow(`after ${PLAN.steadyRunMs / 1000} s more of mixed requests`, memory.atEnd)}

VmRSS every ${PLAN.rssIntervalMs / 1000} s of the ${PLAN.steadyRunMs / 1000} s run (${
    formatCount(memory.steadyRequests)
  } requests), in MiB:
${series}. From the first to the last sample it changed by ${
    ((last - first) / 1024).toFixed(1)
  } MiB (${(change * 100).toFixed(1)} %), so it ${
    flat ? "stayed flat" : "did not stay flat"
  } (flat means within ${FLAT_TOLERANCE * 100} %). From ${PLAN.rssIntervalMs / 1000} s on, the
samples ranged from ${formatMib(Math.min(...later))} to ${formatMib(Math.max(...later))}.

### Loading stages

bench/probes/memory_stages.ts runs with the start task's flags and pauses after each step while
the benchmark reads its memory. Each step adds to the ones above it. Heap is V8's used / total
heap, and external is V8's external memory (ArrayBuffers, WebAssembly memory).

| stage | VmRSS | RssAnon | RssFile | deno executable | heap | external |
| ----- | ----- | ------- | ------- | --------------- | ---- | -------- |
${stageRows.join("\n")}

### V8 flags

A fresh program for each value of DENO_V8_FLAGS (flags separated by commas), with the same
${formatCount(PLAN.experimentRequests)} mixed requests after ${
    PLAN.startupIdleMs / 1000
  } s of idle start-up. VmRSS was read at start-up, halfway and at the end.

| DENO_V8_FLAGS | VmRSS at start-up | halfway | at the end | VmHWM | time for the requests |
| ------------- | ----------------- | ------- | ---------- | ----- | --------------------- |
${experimentRows.join("\n")}

### Notes

${NOTES_START}
${keptNotes(previous)}
${NOTES_END}`;
}
