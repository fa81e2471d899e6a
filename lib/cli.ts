/**
 * Command-line arguments and help text.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DEFAULT_CONFIG_PATH } from "./config.ts";
import { VERSION } from "./version.ts";

export type Invocation =
  | { command: "serve"; configPath: string }
  | { command: "check"; configPath: string }
  | { command: "test"; configPath: string; jid: string }
  | { command: "help" }
  | { command: "version" };

/** An invalid command line. The message names what to change. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export const HELP_TEXT =
  `auth-mastodon ${VERSION}: ejabberd external authentication against Mastodon's database

Usage:
  auth-mastodon [-c FILE]                  serve ejabberd's requests on stdin and stdout
  auth-mastodon check [-c FILE]            check the configuration, database, privileges and accounts
  auth-mastodon test USER@DOMAIN [-c FILE] decide one login as ejabberd would, asking for the password
  auth-mastodon --help | --version

Options:
  -c, --config FILE   configuration file (default ${DEFAULT_CONFIG_PATH})
  -h, --help          show this help and exit
  -V, --version       show the version and exit

Serving (no subcommand) is what ejabberd runs:
  auth_method: external
  extauth_program: "/usr/local/bin/auth-mastodon -c ${DEFAULT_CONFIG_PATH}"
stdout carries 4-byte replies only; log lines go to [log] file, or stderr.

Signals while serving:
  SIGHUP            reopen the log file and reload the configuration
  SIGTERM, SIGINT   finish the request in flight, close the database connections, exit 0
  end of stdin      exit 0 (ejabberd closes stdin to stop the program)

Exit status: 0 after serving or a passing check or accepted test, 1 when a check fails
or a test login is rejected, 2 for a usage or configuration error.
`;

/** Parses the arguments after the program name. Throws {@linkcode UsageError}. */
export function parseArguments(args: string[]): Invocation {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: "string", short: "c" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new UsageError(`${message}; run auth-mastodon --help for the usage`);
  }
  const { values, positionals } = parsed;
  if (values.help) return { command: "help" };
  if (values.version) return { command: "version" };

  const configPath = values.config ?? DEFAULT_CONFIG_PATH;
  if (configPath === "") throw new UsageError("option --config needs a file path");
  const [command, ...rest] = positionals;

  if (command === undefined) return { command: "serve", configPath };
  if (command === "check") {
    if (rest.length > 0) throw new UsageError(`check takes no arguments, got "${rest[0]}"`);
    return { command: "check", configPath };
  }
  if (command === "test") {
    if (rest.length !== 1) {
      throw new UsageError("test needs exactly one USER@DOMAIN, such as alice@example.org");
    }
    const jid = rest[0];
    const at = jid.indexOf("@");
    if (at <= 0 || at === jid.length - 1 || jid.indexOf("@", at + 1) !== -1) {
      throw new UsageError(`test needs USER@DOMAIN, such as alice@example.org, got "${jid}"`);
    }
    return { command: "test", configPath, jid };
  }
  throw new UsageError(
    `unknown subcommand "${command}": the subcommands are check and test; ` +
      `run auth-mastodon --help for the usage`,
  );
}
