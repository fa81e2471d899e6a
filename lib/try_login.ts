/**
 * `auth-mastodon test USER@DOMAIN`: decides one login exactly as for an
 * ejabberd `auth` request and prints the outcome, never the password.
 *
 * @module
 */

import { Authenticator } from "./authenticator.ts";
import { type Config, ConfigError, loadConfig } from "./config.ts";
import { Database } from "./database.ts";
import { Logger } from "./log.ts";
import { PasswordInputError, readPassword } from "./password_prompt.ts";
import { parseRequest } from "./request.ts";

export interface TryLoginOptions {
  configPath: string;
  /** `user@domain` as typed. */
  jid: string;
  /** Writes one line of output for the person running the command. */
  print: (line: string) => void;
  /** Writes an error line. */
  printError: (line: string) => void;
  /** Reads the password; defaults to the terminal prompt or one line of stdin. */
  password?: (prompt: string) => Promise<Uint8Array>;
}

/** Returns the exit status: 0 accepted, 1 rejected or failed, 2 configuration error. */
export async function tryLogin(options: TryLoginOptions): Promise<number> {
  let config: Config;
  try {
    config = await loadConfig(options.configPath);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    options.printError(error.message);
    return 2;
  }

  // ejabberd lowercases the user and the domain before it sends the request.
  const at = options.jid.lastIndexOf("@");
  const user = options.jid.slice(0, at).toLowerCase();
  const domain = options.jid.slice(at + 1).toLowerCase();
  if (`${user}@${domain}` !== options.jid) {
    options.print(`as ejabberd sends it: ${user}@${domain}`);
  }

  let password: Uint8Array;
  try {
    password = await (options.password ?? readPassword)(`Password for ${user}@${domain}: `);
  } catch (error) {
    if (!(error instanceof PasswordInputError)) throw error;
    options.printError(error.message);
    return 1;
  }

  const head = new TextEncoder().encode(`auth:${user}:${domain}:`);
  const request = new Uint8Array(head.length + password.length);
  request.set(head);
  request.set(password, head.length);
  password.fill(0);

  // Problems such as a failed schema detection are shown on stderr.
  const logger = new Logger({ level: "warn" });
  const database = new Database(config.database, { applicationName: "auth-mastodon test" });
  const authenticator = new Authenticator({ config, database, logger });
  try {
    const started = performance.now();
    const decision = await authenticator.decide(parseRequest(request), {
      deadline: started + config.database.queryTimeoutSeconds * 1000,
    });
    request.fill(0);
    const time = `${(performance.now() - started).toFixed(1)} ms`;
    const method = decision.method ? `method ${decision.method}, ` : "";
    const detail = decision.detail ? `: ${decision.detail}` : "";
    options.print(`${decision.outcome} ${decision.reason} (${method}${time})${detail}`);
    return decision.outcome === "accepted" ? 0 : 1;
  } finally {
    await database.close();
    logger.close();
  }
}
