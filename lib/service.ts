/**
 * Serving ejabberd: configuration, logging, database and the request loop,
 * with reloads on SIGHUP. The service never exits on a database or
 * configuration problem, because ejabberd restarts a dead program at once
 * and a crash loop takes its whole authentication pool down.
 *
 * @module
 */

import { Authenticator, type Decision, describeError } from "./authenticator.ts";
import { type Config, ConfigError, loadConfig } from "./config.ts";
import { Database } from "./database.ts";
import { parseIni } from "./ini.ts";
import { Logger, logSafe } from "./log.ts";
import { parseRequest } from "./request.ts";
import { describeFeatures } from "./schema.ts";
import { type RequestLimits, RequestLoop, type StopReason } from "./server.ts";
import { VERSION } from "./version.ts";

/** Time one request may take while no configuration is loaded. */
const UNCONFIGURED_TIMEOUT_MS = 5000;

/** Time given to closing the database connections before exiting. */
const CLOSE_TIMEOUT_MS = 300;

export interface ServeOptions {
  configPath: string;
  input: { read(buffer: Uint8Array): Promise<number | null> };
  output: { write(bytes: Uint8Array): Promise<number> };
  /** True when stdin is a terminal: a person ran the program, not ejabberd. */
  interactive: boolean;
  /** Writes a message for a person at a terminal. */
  printError: (message: string) => void;
}

/** The parts that a configuration reload replaces together. */
interface Backend {
  config: Config;
  database: Database;
  authenticator: Authenticator;
  /** Requests using this backend right now. */
  users: number;
  retired: boolean;
}

/** Serves requests until EOF or a signal and returns the exit status. */
export async function serve(options: ServeOptions): Promise<number> {
  let config: Config | undefined;
  let configError: ConfigError | undefined;
  try {
    config = await loadConfig(options.configPath);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    if (options.interactive) {
      options.printError(error.message);
      return 2;
    }
    configError = error;
  }

  const logger = new Logger({
    level: config?.log.level ?? "info",
    file: config?.log.file ?? await bestEffortLogFile(options.configPath),
    errorsToStderr: true,
  });
  const service = new Service(options, logger);
  return await service.run(config, configError);
}

class Service {
  readonly #options: ServeOptions;
  readonly #logger: Logger;
  #backend: Backend | undefined;
  #loop: RequestLoop | undefined;
  #failedInARow = 0;
  #reloading: Promise<void> | undefined;
  /** Aborted when the service stops, so start-up work in flight stays quiet. */
  readonly #lifetime = new AbortController();

  constructor(options: ServeOptions, logger: Logger) {
    this.#options = options;
    this.#logger = logger;
  }

  async run(config: Config | undefined, configError: ConfigError | undefined): Promise<number> {
    const uninstall = this.#installSafetyNets();
    this.#loop = new RequestLoop({
      input: this.#options.input,
      output: this.#options.output,
      logger: this.#logger,
      handle: (frame, limits) => this.#handle(frame, limits),
      requestTimeoutMs: () =>
        this.#backend
          ? this.#backend.config.database.queryTimeoutSeconds * 1000
          : UNCONFIGURED_TIMEOUT_MS,
    });
    const signals = this.#installSignals();

    if (config !== undefined) {
      this.#activate(config, "started");
    } else {
      this.#logger.error(
        `${configError!.message}; replying false to every request until the file is fixed ` +
          `and the program gets SIGHUP (or is restarted)`,
      );
    }

    let reason: StopReason;
    try {
      reason = await this.#loop.run();
    } finally {
      signals();
    }
    this.#logger.info(`stopping (${reason}), pid ${Deno.pid}`);
    this.#lifetime.abort();
    await this.#closeBackend(this.#backend);
    this.#logger.close();
    uninstall();
    return 0;
  }

  async #handle(frame: Uint8Array, limits: RequestLimits): Promise<boolean> {
    const started = performance.now();
    const parsed = parseRequest(frame);
    const backend = this.#backend;
    let decision: Decision;
    if (backend === undefined) {
      decision = {
        outcome: "error",
        command: parsed.command,
        user: parsed.user,
        domain: parsed.domain,
        reason: "not-configured",
        detail: "the configuration file is invalid; fix it and send SIGHUP",
      };
    } else {
      backend.users++;
      try {
        decision = await backend.authenticator.decide(parsed, limits);
      } finally {
        backend.users--;
        if (backend.retired && backend.users === 0) void this.#closeBackend(backend);
      }
    }
    this.#logDecision(decision, performance.now() - started);
    return decision.outcome === "accepted";
  }

  #logDecision(decision: Decision, durationMs: number): void {
    const user = decision.user === undefined ? "-" : logSafe(decision.user);
    const domain = decision.domain === undefined ? "-" : logSafe(decision.domain);
    const fields = [
      decision.command ?? "-",
      user === "-" && domain === "-" ? "-" : `${user}@${domain}`,
      decision.method ? `method=${decision.method}` : undefined,
      `reason=${decision.reason}`,
      decision.cache ? `cache=${decision.cache}` : undefined,
      `time=${durationMs.toFixed(1)}ms`,
      decision.detail ? `(${logSafeMessage(decision.detail)})` : undefined,
    ].filter((field) => field !== undefined);
    const message = fields.join(" ");

    if (decision.outcome === "error") {
      this.#failedInARow++;
      const key = `${decision.reason}: ${decision.detail ?? ""}`;
      this.#logger.repeated("error", key, "error", message);
      return;
    }
    if (this.#failedInARow > 0 && decision.queried) {
      // The count of suppressed errors belongs before the line that ends them.
      this.#logger.flushRepeats(true);
      const failed = this.#failedInARow;
      this.#logger.info(
        `database available again after ${failed} failed request${failed === 1 ? "" : "s"}`,
      );
      this.#failedInARow = 0;
    }
    this.#logger.write("info", decision.outcome, message);
  }

  #activate(config: Config, verb: "started" | "reloaded"): void {
    const database = new Database(config.database, {
      applicationName: "auth-mastodon",
      onConnect: (host, tls) =>
        this.#logger.info(`database connection opened to ${host} ${tls ? "with" : "without"} TLS`),
    });
    const authenticator = new Authenticator({ config, database, logger: this.#logger });
    this.#backend = { config, database, authenticator, users: 0, retired: false };

    for (const warning of config.warnings) this.#logger.warn(warning);
    if (config.domains.length === 0) {
      this.#logger.warn(
        "no [xmpp] domains configured: users of every XMPP domain are looked up as " +
          "this instance's accounts; set [xmpp] domains to the instance's domains",
      );
    }
    const deadline = performance.now() + config.database.queryTimeoutSeconds * 1000;
    // The start-up line waits for the schema, while requests are already served.
    const signal = this.#lifetime.signal;
    void authenticator.prepare({ deadline, signal }).then(() => {
      if (signal.aborted) return;
      const features = authenticator.features;
      const schema = features ? describeFeatures(features) : "unknown (see the error above)";
      this.#logger.info(
        `${verb} auth-mastodon ${VERSION}, pid ${Deno.pid}, config ${config.path}, ` +
          `domains ${config.domains.join(",") || "(any)"}, schema ${schema}`,
      );
    });
  }

  async #reload(): Promise<void> {
    const path = this.#options.configPath;
    let config: Config;
    try {
      config = await loadConfig(path);
    } catch (error) {
      const keeping = this.#backend ? "keeping the previous configuration" : "still unconfigured";
      this.#logger.error(`reload failed in pid ${Deno.pid}, ${keeping}: ${describeError(error)}`);
      return;
    }
    this.#logger.configure({ level: config.log.level, file: config.log.file });
    const previous = this.#backend;
    this.#activate(config, "reloaded");
    if (previous !== undefined) {
      previous.retired = true;
      if (previous.users === 0) await this.#closeBackend(previous);
    }
  }

  async #closeBackend(backend: Backend | undefined): Promise<void> {
    if (backend === undefined) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      backend.database.close(),
      new Promise((resolve) => timer = setTimeout(resolve, CLOSE_TIMEOUT_MS)),
    ]);
    clearTimeout(timer);
  }

  #installSignals(): () => void {
    const stop = () => {
      this.#logger.info(
        `signal received by pid ${Deno.pid}: finishing the request in flight, then exiting`,
      );
      this.#loop?.stop();
    };
    const hangUp = () => {
      this.#logger.reopen();
      this.#logger.info(
        `SIGHUP received by pid ${Deno.pid}: log file reopened, reloading the configuration`,
      );
      this.#reloading = (this.#reloading ?? Promise.resolve()).then(() => this.#reload());
    };
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGHUP", hangUp);
    return () => {
      Deno.removeSignalListener("SIGTERM", stop);
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGHUP", hangUp);
    };
  }

  /**
   * Keeps the process alive through errors that escaped their handlers, and
   * routes library console output, which Deno writes to stdout, to the log.
   */
  #installSafetyNets(): () => void {
    const onRejection = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      this.#logger.error(`internal error (unhandled rejection): ${describeError(event.reason)}`);
    };
    const onError = (event: ErrorEvent) => {
      event.preventDefault();
      this.#logger.error(`internal error (uncaught): ${describeError(event.error)}`);
    };
    globalThis.addEventListener("unhandledrejection", onRejection);
    globalThis.addEventListener("error", onError);

    const saved = { ...console };
    const toLog = (...parts: unknown[]) => {
      this.#logger.warn(`library output: ${logSafeMessage(parts.map(String).join(" "))}`);
    };
    for (
      const name of ["log", "info", "debug", "warn", "error", "trace", "dir", "table"] as const
    ) {
      // deno-lint-ignore no-console
      console[name] = toLog;
    }
    return () => {
      globalThis.removeEventListener("unhandledrejection", onRejection);
      globalThis.removeEventListener("error", onError);
      Object.assign(console, saved);
    };
  }
}

/** Keeps a message on one line: control characters are escaped, spaces kept. */
function logSafeMessage(text: string): string {
  return logSafe(text, { spaces: true, maxChars: 2000 });
}

/**
 * Returns `[log] file` from a configuration that failed validation, so its
 * error still reaches the log file an admin looks at.
 */
async function bestEffortLogFile(path: string): Promise<string | undefined> {
  try {
    const file = parseIni(await Deno.readTextFile(path)).get("log")?.get("file")?.value;
    if (file === undefined || file === "") return undefined;
    return file.startsWith("/") ? file : undefined;
  } catch {
    return undefined;
  }
}
