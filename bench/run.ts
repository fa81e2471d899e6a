/**
 * `deno task bench`: measures the program as ejabberd runs it, against a
 * throwaway PostgreSQL cluster with 20,000 generated accounts, and writes
 * docs/benchmarks.md.
 *
 * Every reply is checked, but no time is asserted: a missed target is
 * written as "not met" and the run still succeeds. Everything the run starts
 * (the cluster, the programs, the probes, the temporary folder) is stopped
 * or removed when it ends, fails or gets SIGINT or SIGTERM.
 *
 * @module
 */

import { bcryptVerify } from "hash-wasm";
import { fixture } from "../tests/support/hashes.ts";
import { TestCluster } from "../tests/support/postgres.ts";
import { Program, REPO_ROOT } from "../tests/support/program.ts";
import { PipeChild, runProbe, runSteppedProbe } from "./child.ts";
import { describeMachine, readLoadAverage } from "./machine.ts";
import { PLAN } from "./plan.ts";
import type { DecisionsJob } from "./probes/decisions.ts";
import { readResidentMemory, type ResidentMemory } from "./memory.ts";
import {
  type BenchResults,
  type DecisionSummaries,
  type FirstRequestParts,
  type MemoryExperiment,
  type MemoryStage,
  renderPage,
} from "./report.ts";
import {
  type BenchDatabase,
  createBenchDatabase,
  GENERATED_ACCOUNTS,
  generatedUsername,
  HASH_FIXTURE,
  writeBenchConfig,
} from "./setup.ts";
import { seededRandom, summarize, type Summary } from "./stats.ts";
import {
  isuserRequest,
  MixedWorkload,
  passwordRequest,
  type PlannedRequest,
  tokenRequest,
} from "./workload.ts";

const DOMAIN = "example.org";
const DATABASE_NAME = "mastodon";
const SEED = 20_261_204;
const PAGE_PATH = `${REPO_ROOT}/docs/benchmarks.md`;

/**
 * V8 flags tried on the program through DENO_V8_FLAGS, which separates flags
 * with commas. `--max-old-space-size=8` is not among them: the program ran
 * out of heap at start-up with it in a trial run.
 */
const EXPERIMENT_V8_FLAGS = [
  "",
  "--max-semi-space-size=1",
  "--max-old-space-size=16",
  "--max-semi-space-size=1,--max-old-space-size=16",
  "--optimize-for-size",
  "--single-threaded",
];

/** Prints one line of progress for the person running the benchmark. */
function progress(message: string): void {
  // deno-lint-ignore no-console
  console.error(`bench: ${message}`);
}

/**
 * Stop actions for everything the run started, run last-in first-out. It is
 * used once: after `runAll`, every later call returns the same promise.
 */
class Cleanup {
  readonly #actions = new Map<number, { name: string; run: () => void | Promise<void> }>();
  #nextId = 0;
  #running: Promise<void> | undefined;

  /** Registers `run` and returns a function that unregisters it after a normal stop. */
  add(name: string, run: () => void | Promise<void>): () => void {
    const id = this.#nextId++;
    this.#actions.set(id, { name, run });
    return () => this.#actions.delete(id);
  }

  /**
   * Runs every registered action, newest first. A failure is reported and
   * the rest still run. A signal handler and the run's own `finally` may both
   * call this, and the second call waits for the first.
   */
  runAll(): Promise<void> {
    this.#running ??= this.#runActions();
    return this.#running;
  }

  async #runActions(): Promise<void> {
    const actions = [...this.#actions.values()].reverse();
    this.#actions.clear();
    for (const action of actions) {
      try {
        await action.run();
      } catch (error) {
        progress(`cleanup of ${action.name} failed: ${describeError(error)}`);
      }
    }
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Context of one run: where the program's configuration is and what the database holds. */
interface Setup {
  cleanup: Cleanup;
  configPath: string;
  database: BenchDatabase;
}

/** Starts the program like `deno task start` and registers it for cleanup. */
async function startProgram(
  setup: Setup,
  env: Record<string, string> = {},
): Promise<{ program: Program; finish: () => Promise<void> }> {
  const program = await Program.start({ args: ["-c", setup.configPath], env });
  const unregister = setup.cleanup.add(
    `program pid ${program.pid}`,
    () => program[Symbol.asyncDispose](),
  );
  const finish = async () => {
    const result = await program.finish();
    unregister();
    const lines = result.stderr.split("\n").filter((line) => line !== "");
    for (const line of lines) progress(`program stderr: ${line}`);
  };
  return { program, finish };
}

/** Sends `planned` and throws unless the reply is the expected one. */
async function send(program: Program | PipeChild, planned: PlannedRequest): Promise<void> {
  const reply = await program.request(planned.text);
  if (reply !== planned.expected) {
    throw new Error(
      `${planned.kind} for ${planned.user}: expected ${planned.expected}, got ${reply}`,
    );
  }
}

/**
 * Sends `warmup + count` requests made by `next`, one at a time, and returns
 * the round-trip times of the last `count` and their total wall time, in ms.
 */
async function timeRequests(
  program: Program | PipeChild,
  plan: { warmup: number; count: number },
  next: () => PlannedRequest,
): Promise<{ samples: number[]; elapsedMs: number }> {
  for (let index = 0; index < plan.warmup; index++) await send(program, next());
  const samples: number[] = [];
  const loopStarted = performance.now();
  for (let index = 0; index < plan.count; index++) {
    const planned = next();
    const started = performance.now();
    await send(program, planned);
    samples.push(performance.now() - started);
  }
  return { samples, elapsedMs: performance.now() - loopStarted };
}

/**
 * Sends the requests of the pause series, each after a pause in which the
 * client sends nothing, and returns their round-trip times in ms.
 */
async function timeRequestsAfterPauses(
  program: Program | PipeChild,
  next: () => PlannedRequest,
): Promise<number[]> {
  const samples: number[] = [];
  for (let index = 0; index < PLAN.isuserAfterPause.count; index++) {
    await new Promise((resolve) => setTimeout(resolve, PLAN.isuserAfterPause.pauseMs));
    const planned = next();
    const started = performance.now();
    await send(program, planned);
    samples.push(performance.now() - started);
  }
  return samples;
}

function randomUsers(seed: number): () => string {
  const random = seededRandom(seed);
  return () => generatedUsername(1 + Math.floor(random() * GENERATED_ACCOUNTS));
}

/** Times fresh spawns of the program from spawn to the first `isuser` reply. */
async function measureColdStart(setup: Setup): Promise<Summary> {
  const samples: number[] = [];
  for (let index = 0; index < PLAN.coldStart.warmup + PLAN.coldStart.count; index++) {
    const started = performance.now();
    const { program, finish } = await startProgram(setup);
    await send(program, isuserRequest(generatedUsername(1), DOMAIN));
    const elapsed = performance.now() - started;
    await finish();
    if (index >= PLAN.coldStart.warmup) samples.push(elapsed);
  }
  return summarize(samples);
}

/** Times a probe from spawn to its first reply. */
async function timeProbeReply(setup: Setup, script: string): Promise<number> {
  const started = performance.now();
  const probe = await PipeChild.spawn(script);
  const unregister = setup.cleanup.add(`probe pid ${probe.pid}`, () => probe.kill());
  await probe.reply();
  const elapsed = performance.now() - started;
  await probe.close();
  unregister();
  return elapsed;
}

/**
 * Splits the cold start: Deno's start-up (empty script), the module graph
 * (main.ts imported), and inside a fresh process the configuration, the
 * database connection, the schema detection and the first lookup.
 */
async function measureStartParts(setup: Setup): Promise<FirstRequestParts> {
  const empty: number[] = [];
  const modules: number[] = [];
  const steps: Record<"configMs" | "connectMs" | "schemaMs" | "lookupMs", number>[] = [];
  for (let index = 0; index < PLAN.coldStart.warmup + PLAN.coldStart.count; index++) {
    const emptyMs = await timeProbeReply(setup, "bench/probes/empty.ts");
    const modulesMs = await timeProbeReply(setup, "bench/probes/modules.ts");
    const step = await runProbe<typeof steps[number]>("bench/probes/first_request.ts", [
      setup.configPath,
      generatedUsername(1),
    ]);
    if (index < PLAN.coldStart.warmup) continue;
    empty.push(emptyMs);
    modules.push(modulesMs);
    steps.push(step);
  }
  return {
    denoStart: summarize(empty),
    moduleGraph: summarize(modules),
    config: summarize(steps.map((step) => step.configMs)),
    connect: summarize(steps.map((step) => step.connectMs)),
    schema: summarize(steps.map((step) => step.schemaMs)),
    lookup: summarize(steps.map((step) => step.lookupMs)),
  };
}

/** Measures latency through the pipes on one program: isuser, cold, cached and token logins. */
async function measureLatencies(setup: Setup) {
  const { program, finish } = await startProgram(setup);
  const nextUser = randomUsers(SEED);
  const isuser = await timeRequests(
    program,
    PLAN.isuser,
    () => isuserRequest(nextUser(), DOMAIN),
  );

  const afterPause = await timeRequestsAfterPauses(
    program,
    () => isuserRequest(nextUser(), DOMAIN),
  );

  // Cold logins and bcrypt alone alternate, so that a change of machine
  // load during the run affects both series alike.
  const { password, hash } = fixture(HASH_FIXTURE);
  const authCold: number[] = [];
  const bcryptAlone: number[] = [];
  const coldUsers = Array.from(
    { length: PLAN.authCold.warmup + PLAN.authCold.count },
    (_, index) => generatedUsername(101 + index),
  );
  for (const [index, user] of coldUsers.entries()) {
    const started = performance.now();
    await send(program, passwordRequest(user, DOMAIN));
    const authMs = performance.now() - started;

    const bcryptStarted = performance.now();
    const matches = await bcryptVerify({ password, hash });
    const bcryptMs = performance.now() - bcryptStarted;
    if (!matches) throw new Error(`hash fixture ${HASH_FIXTURE} did not verify with hash-wasm`);

    if (index < PLAN.authCold.warmup) continue;
    authCold.push(authMs);
    bcryptAlone.push(bcryptMs);
  }

  const cachedUser = coldUsers[coldUsers.length - 1];
  const cached = await timeRequests(
    program,
    PLAN.cached,
    () => passwordRequest(cachedUser, DOMAIN, "auth-cached"),
  );
  const { tokenUser, token } = setup.database;
  const tokenLogins = await timeRequests(
    program,
    PLAN.token,
    () => tokenRequest(tokenUser, DOMAIN, token),
  );
  await finish();
  return {
    isuser: summarize(isuser.samples),
    isuserPerSecond: isuser.samples.length / (isuser.elapsedMs / 1000),
    isuserAfterPause: summarize(afterPause),
    authCold: summarize(authCold),
    bcryptAlone: summarize(bcryptAlone),
    cached: summarize(cached.samples),
    token: summarize(tokenLogins.samples),
  };
}

/**
 * Times `isuser`-shaped requests to a probe that replies without looking
 * anything up, back to back and after pauses.
 */
async function measurePipeRoundTrip(
  setup: Setup,
): Promise<{ backToBack: Summary; afterPause: Summary }> {
  const responder = await PipeChild.spawn("bench/probes/responder.ts");
  const unregister = setup.cleanup.add(
    `responder pid ${responder.pid}`,
    () => responder.kill(),
  );
  const nextUser = randomUsers(SEED);
  const { samples } = await timeRequests(
    responder,
    PLAN.isuser,
    () => isuserRequest(nextUser(), DOMAIN),
  );
  const afterPause = await timeRequestsAfterPauses(
    responder,
    () => isuserRequest(nextUser(), DOMAIN),
  );
  await responder.close();
  unregister();
  return { backToBack: summarize(samples), afterPause: summarize(afterPause) };
}

/** Times the same decisions in a fresh process without pipes, in the decisions probe. */
function measureDecisions(setup: Setup): Promise<DecisionSummaries> {
  const job: DecisionsJob = {
    configPath: setup.configPath,
    domain: DOMAIN,
    generatedAccounts: GENERATED_ACCOUNTS,
    seed: SEED,
    cachedUser: generatedUsername(GENERATED_ACCOUNTS),
    tokenUser: setup.database.tokenUser,
    token: setup.database.token,
    coldUsers: Array.from(
      { length: PLAN.authCold.warmup + PLAN.authCold.count },
      (_, index) => generatedUsername(201 + index),
    ),
    coldWarmup: PLAN.authCold.warmup,
    pauses: PLAN.isuserAfterPause,
    warmup: PLAN.isuser.warmup,
    count: PLAN.isuser.count,
  };
  return runProbe<DecisionSummaries>("bench/probes/decisions.ts", [], JSON.stringify(job));
}

function mixedWorkload(setup: Setup): MixedWorkload {
  return new MixedWorkload({
    random: seededRandom(SEED + 1),
    domain: DOMAIN,
    generatedAccounts: GENERATED_ACCOUNTS,
    tokenUser: setup.database.tokenUser,
    token: setup.database.token,
  });
}

/**
 * Reads the program's memory at start-up, after its first `isuser` and
 * first bcrypt, after the mixed requests, and every few seconds of a
 * continuous mixed run.
 */
async function measureMemory(setup: Setup) {
  const { program, finish } = await startProgram(setup);
  const memory = () => readResidentMemory(program.pid);
  await new Promise((resolve) => setTimeout(resolve, PLAN.startupIdleMs));
  const atStart = memory();
  await send(program, isuserRequest(generatedUsername(1), DOMAIN));
  const afterFirstIsuser = memory();
  await send(program, passwordRequest(generatedUsername(GENERATED_ACCOUNTS - 1000), DOMAIN));
  const afterFirstBcrypt = memory();

  const workload = mixedWorkload(setup);
  const mixedStarted = performance.now();
  for (let index = 0; index < PLAN.mixedRequests; index++) await send(program, workload.next());
  const mixedSeconds = (performance.now() - mixedStarted) / 1000;
  const afterMixed = memory();

  progress(`steady run of ${PLAN.steadyRunMs / 1000} s with VmRSS samples`);
  const series: { seconds: number; vmRssKb: number }[] = [];
  const runStarted = performance.now();
  series.push({ seconds: 0, vmRssKb: memory().vmRssKb });
  let steadyRequests = 0;
  const intervals = PLAN.steadyRunMs / PLAN.rssIntervalMs;
  while (series.length <= intervals) {
    await send(program, workload.next());
    steadyRequests++;
    const elapsed = performance.now() - runStarted;
    if (elapsed >= series.length * PLAN.rssIntervalMs) {
      series.push({ seconds: elapsed / 1000, vmRssKb: memory().vmRssKb });
    }
  }
  const atEnd = memory();
  await finish();
  return {
    atStart,
    afterFirstIsuser,
    afterFirstBcrypt,
    afterMixed,
    mixedSeconds,
    series,
    steadyRequests,
    atEnd,
  };
}

/**
 * Runs the program with each value of {@linkcode EXPERIMENT_V8_FLAGS} and
 * reads its memory at start-up, halfway through the mixed requests and at
 * the end.
 */
async function measureExperiments(setup: Setup): Promise<MemoryExperiment[]> {
  const experiments: MemoryExperiment[] = [];
  for (const flags of EXPERIMENT_V8_FLAGS) {
    const { program, finish } = await startProgram(setup, flags ? { DENO_V8_FLAGS: flags } : {});
    await new Promise((resolve) => setTimeout(resolve, PLAN.startupIdleMs));
    const atStart = readResidentMemory(program.pid);
    const workload = mixedWorkload(setup);
    const started = performance.now();
    const half = PLAN.experimentRequests / 2;
    for (let index = 0; index < half; index++) await send(program, workload.next());
    const halfway = readResidentMemory(program.pid);
    for (let index = half; index < PLAN.experimentRequests; index++) {
      await send(program, workload.next());
    }
    const seconds = (performance.now() - started) / 1000;
    const afterRequests = readResidentMemory(program.pid);
    await finish();
    experiments.push({ flags, atStart, halfway, afterRequests, seconds });
  }
  return experiments;
}

async function run(cleanup: Cleanup): Promise<BenchResults> {
  const runStarted = performance.now();
  const startedAt = new Date();

  progress("starting a PostgreSQL cluster");
  // NOTE: a signal that arrives while TestCluster.start runs leaves that
  // cluster running. The NOTE on TestCluster explains how to stop it.
  const cluster = await TestCluster.start();
  cleanup.add("PostgreSQL cluster", () => cluster.destroy());
  const folder = await Deno.makeTempDir({ dir: "/tmp", prefix: "auth-mastodon-bench-" });
  cleanup.add(`folder ${folder}`, () => Deno.remove(folder, { recursive: true }));
  const machine = await describeMachine(cluster);

  progress(`creating the database with ${GENERATED_ACCOUNTS} generated accounts`);
  const database = await createBenchDatabase(cluster, DATABASE_NAME);
  const configPath = await writeBenchConfig(folder, cluster, DATABASE_NAME);
  const setup: Setup = { cleanup, configPath, database };

  progress("cold start");
  const coldStart = await measureColdStart(setup);
  const startParts = await measureStartParts(setup);
  progress("latency of isuser, password and token requests");
  const latencies = await measureLatencies(setup);
  const pipeRoundTrip = await measurePipeRoundTrip(setup);
  const decisions = await measureDecisions(setup);
  progress(`memory over ${PLAN.mixedRequests} mixed requests`);
  const memory = await measureMemory(setup);
  progress("memory of each loading stage, and V8 flags");
  const stages = await runSteppedProbe(
    "bench/probes/memory_stages.ts",
    [configPath],
    (step: Omit<MemoryStage, keyof ResidentMemory>, pid): MemoryStage => ({
      ...step,
      ...readResidentMemory(pid),
    }),
  );
  const experiments = await measureExperiments(setup);

  return {
    machine,
    startedAt,
    durationSeconds: (performance.now() - runStarted) / 1000,
    loadAverageAfter: await readLoadAverage(),
    accounts: database.accountCount,
    coldStart,
    startParts,
    ...latencies,
    pipeRoundTrip: pipeRoundTrip.backToBack,
    pipeRoundTripAfterPause: pipeRoundTrip.afterPause,
    decisions,
    memory,
    stages,
    experiments,
  };
}

/** Formats the page with `deno fmt`, so that `deno fmt --check` passes on it. */
async function formatPage(): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", PAGE_PATH],
    cwd: REPO_ROOT,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!output.success) {
    throw new Error(`deno fmt ${PAGE_PATH} failed with exit code ${output.code}`);
  }
}

async function main(): Promise<void> {
  const cleanup = new Cleanup();
  const stopOnSignal = (signal: Deno.Signal, status: number) => () => {
    progress(`${signal} received: stopping everything the benchmark started`);
    cleanup.runAll().finally(() => Deno.exit(status));
  };
  const onInterrupt = stopOnSignal("SIGINT", 130);
  const onTerminate = stopOnSignal("SIGTERM", 143);
  Deno.addSignalListener("SIGINT", onInterrupt);
  Deno.addSignalListener("SIGTERM", onTerminate);
  try {
    const results = await run(cleanup);
    const previous = await Deno.readTextFile(PAGE_PATH).catch((error) => {
      if (error instanceof Deno.errors.NotFound) return "";
      throw error;
    });
    await Deno.writeTextFile(PAGE_PATH, renderPage(results, previous));
    await formatPage();
    progress(`wrote ${PAGE_PATH} after ${results.durationSeconds.toFixed(0)} s`);
  } finally {
    await cleanup.runAll();
    Deno.removeSignalListener("SIGINT", onInterrupt);
    Deno.removeSignalListener("SIGTERM", onTerminate);
  }
}

if (import.meta.main) await main();
