/**
 * auth-mastodon: ejabberd external authentication against Mastodon's
 * PostgreSQL database. This file only wires things up; `lib/` does the work.
 *
 * @module
 */

import { runCheck } from "./lib/check.ts";
import { HELP_TEXT, parseArguments, UsageError } from "./lib/cli.ts";
import { serve } from "./lib/service.ts";
import { tryLogin } from "./lib/try_login.ts";
import { VERSION } from "./lib/version.ts";

const encoder = new TextEncoder();

function printTo(stream: typeof Deno.stdout | typeof Deno.stderr, text: string): void {
  const bytes = encoder.encode(text.endsWith("\n") ? text : `${text}\n`);
  let offset = 0;
  while (offset < bytes.length) offset += stream.writeSync(bytes.subarray(offset));
}

/** Runs the program and returns its exit status. */
export async function main(args: string[]): Promise<number> {
  let invocation;
  try {
    invocation = parseArguments(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    printTo(Deno.stderr, `auth-mastodon: ${error.message}`);
    return 2;
  }

  switch (invocation.command) {
    case "help":
      printTo(Deno.stdout, HELP_TEXT);
      return 0;
    case "version":
      printTo(Deno.stdout, `auth-mastodon ${VERSION}`);
      return 0;
    case "serve":
      return await serve({
        configPath: invocation.configPath,
        input: Deno.stdin,
        output: Deno.stdout,
        interactive: Deno.stdin.isTerminal(),
        printError: (message) => printTo(Deno.stderr, `auth-mastodon: ${message}`),
      });
    case "check":
      return await runCheck({
        configPath: invocation.configPath,
        print: (line) => printTo(Deno.stdout, line),
      });
    case "test":
      return await tryLogin({
        configPath: invocation.configPath,
        jid: invocation.jid,
        print: (line) => printTo(Deno.stdout, line),
        printError: (line) => printTo(Deno.stderr, `auth-mastodon: ${line}`),
      });
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
