/**
 * End-to-end tests: the real program as a child process with pipes, as
 * ejabberd runs it, against a real PostgreSQL server.
 */

import assert from "node:assert/strict";
import { VERSION } from "../lib/version.ts";
import { createMastodonDatabase, PASSWORD, TOKENS, writeConfig } from "./support/mastodon.ts";
import { TestCluster } from "./support/postgres.ts";
import { concat, frame, Program, REPO_ROOT, startTaskArguments } from "./support/program.ts";

const cluster = await TestCluster.start();
await createMastodonDatabase(cluster, "mastodon", "main");
const folder = await Deno.makeTempDir({ dir: "/tmp" });
const logFile = `${folder}/auth.log`;
const configPath = await writeConfig(folder, cluster, "mastodon", {
  log: `level = info\nfile = ${logFile}`,
});

Deno.test.afterAll(async () => {
  await cluster.destroy();
  await Deno.remove(folder, { recursive: true });
});

function start(args: string[] = ["-c", configPath]): Promise<Program> {
  return Program.start({ args, logFile });
}

async function logLines(): Promise<string[]> {
  const text = await Deno.readTextFile(logFile);
  return text.split("\n").filter((line) => line !== "").map((line) => line.slice(25));
}

Deno.test("program answers each request with the exact reply bytes", async () => {
  await using program = await start();
  assert.equal(await program.request("isuser:alice:example.org"), true);
  assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), true);
  assert.equal(await program.request("auth:alice:example.org:wrong-Password-77"), false);
  assert.equal(await program.request("isuser:nobody:example.org"), false);
  assert.equal(await program.request(`auth:totp:example.org:${TOKENS.totpValid}`), true);
  assert.equal(await program.request("setpass:alice:example.org:new"), false);
  const result = await program.finish();
  assert.ok(result.waitedMs < 1000, `exit took ${result.waitedMs} ms`);
});

Deno.test("program connects through a Unix socket directory", async () => {
  const socketConfig = await writeConfig(folder, cluster, "mastodon", {
    host: cluster.socketDir,
    file: "socket.ini",
  });
  await using program = await Program.start({ args: ["-c", socketConfig] });
  assert.equal(await program.request("isuser:alice:example.org"), true);
  assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), true);
  const result = await program.finish();
  assert.doesNotMatch(result.stderr, /error /);
});

Deno.test("program answers coalesced frames in order", async () => {
  await using program = await start();
  const requests = [
    "isuser:alice:example.org",
    "isuser:nobody:example.org",
    `auth:alice:example.org:${PASSWORD}`,
    "removeuser:alice:example.org",
    "isuser:bob:example.org",
  ];
  await program.send(concat(...requests.map((request) => frame(request))));
  const replies = [];
  for (const _ of requests) replies.push(await program.reply());
  assert.deepEqual(replies, [true, false, true, false, true]);
  await program.finish();
});

Deno.test("program joins a frame sent one byte at a time", async () => {
  await using program = await start();
  const bytes = frame(`auth:alice:example.org:${PASSWORD}`);
  for (const byte of bytes) {
    await program.send(Uint8Array.of(byte));
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  assert.equal(await program.reply(), true);
  await program.finish();
});

Deno.test("program rejects zero-length, unknown and malformed frames", async () => {
  await using program = await start();
  await program.send(Uint8Array.of(0, 0));
  assert.equal(await program.reply(), false);
  assert.equal(await program.request("hello"), false);
  assert.equal(await program.request("auth:alice:example.org"), false);
  assert.equal(
    await program.request(
      Uint8Array.of(0x69, 0x73, 0x75, 0x73, 0x65, 0x72, 0x3a, 0xff, 0x3a, 0x78),
    ),
    false,
  );
  assert.equal(await program.request("isuser:alice:example.org"), true);
  await program.finish();
});

Deno.test("program answers a 65,535-byte frame once", async () => {
  await using program = await start();
  const head = new TextEncoder().encode("auth:alice:example.org:");
  const body = new Uint8Array(0xffff).fill(0x61);
  body.set(head);
  await program.send(frame(body));
  assert.equal(await program.reply(), false);
  const isuser = new Uint8Array(0xffff).fill(0x62);
  isuser.set(new TextEncoder().encode("isuser:"));
  assert.equal(await program.request(isuser), false);
  assert.equal(await program.request("isuser:alice:example.org"), true);
  await program.finish();
});

Deno.test("program exits 0 at EOF in the middle of a frame", async () => {
  await using program = await start();
  assert.equal(await program.request("isuser:alice:example.org"), true);
  await program.send(Uint8Array.of(0x00, 0x30, 0x61, 0x75, 0x74));
  await new Promise((resolve) => setTimeout(resolve, 100));
  await program.closeStdin();
  const result = await program.exit();
  assert.equal(result.code, 0);
  assert.deepEqual([...result.extraStdout], []);
  assert.ok(result.waitedMs < 1000, `exit took ${result.waitedMs} ms`);
});

Deno.test("program stops quietly when stdin is empty", async () => {
  // Stopping during start-up must not report the connection it closed itself.
  const quiet = await writeConfig(folder, cluster, "mastodon", {
    file: "quiet.ini",
    log: "level = info",
  });
  await using program = await Program.start({ args: ["-c", quiet] });
  await program.closeStdin();
  const result = await program.exit();
  assert.equal(result.code, 0);
  assert.deepEqual([...result.extraStdout], []);
  assert.doesNotMatch(result.stderr, / error /);
  const stopping = result.stderr.indexOf("info stopping (end-of-input)");
  const started = result.stderr.indexOf("info started ");
  assert.ok(stopping !== -1, result.stderr);
  assert.ok(started === -1 || started < stopping, `started after stopping:\n${result.stderr}`);
});

Deno.test("program answers frames that arrive with EOF", async () => {
  // Requests framed by hand and piped in arrive together with the end of input.
  await using program = await start();
  await program.send(concat(
    frame("isuser:alice:example.org"),
    frame(`auth:alice:example.org:${PASSWORD}`),
    frame("isuser:nobody:example.org"),
  ));
  await program.closeStdin();
  assert.deepEqual(
    [await program.reply(), await program.reply(), await program.reply()],
    [true, true, false],
  );
  const result = await program.exit();
  assert.equal(result.code, 0);
  assert.deepEqual([...result.extraStdout], []);
});

Deno.test("program logs one line per decision with reason and time", async () => {
  await Deno.writeTextFile(logFile, "");
  await using program = await start();
  assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), true);
  assert.equal(await program.request(`auth:alice:example.org:wrong-Password-77`), false);
  assert.equal(await program.request(`auth:totp:example.org:${TOKENS.totpValid}`), true);
  assert.equal(await program.request("isuser:alice:other.example"), false);
  assert.equal(await program.request("tryregister:eve:example.org:x"), false);
  assert.equal(await program.request("hello"), false);
  assert.equal(await program.request("isuser:we ird\nname:example.org"), false);
  await program.finish();

  const lines = await logLines();
  const decisions = lines.filter((line) => /^(accepted|rejected|error) /.test(line));
  const expected = [
    /^accepted auth alice@example\.org method=password reason=ok cache=miss time=\d+\.\dms$/,
    /^rejected auth alice@example\.org method=password reason=wrong-password cache=miss time=\d+\.\dms$/,
    /^accepted auth totp@example\.org method=token reason=ok time=\d+\.\dms$/,
    /^rejected isuser alice@other\.example reason=foreign-domain time=\d+\.\dms$/,
    /^rejected tryregister eve@example\.org reason=read-only time=\d+\.\dms$/,
    /^rejected - - reason=malformed-request time=\d+\.\dms \(unknown command \(5 bytes\)\)$/,
    /^rejected isuser we\\x20ird\\x0aname@example\.org reason=unknown-user time=\d+\.\dms$/,
  ];
  assert.equal(decisions.length, expected.length, decisions.join("\n"));
  expected.forEach((pattern, index) => assert.match(decisions[index], pattern));

  const started = lines.find((line) => line.startsWith("info started "));
  assert.ok(started, lines.join("\n"));
  assert.match(
    started,
    new RegExp(
      `^info started auth-mastodon ${
        VERSION.replaceAll(".", "\\.")
      }, pid \\d+, config ${configPath}, ` +
        `domains example\\.org, schema user_roles,require_2fa,requested_deletion_at ` +
        `\\(Mastodon later than 4\\.6 \\(main\\), PostgreSQL 15`,
    ),
  );
  assert.ok(lines.some((line) => /^info stopping \(end-of-input\), pid \d+$/.test(line)));
});

Deno.test("program writes nothing but replies to stdout", async () => {
  // Debug logging to stderr, a library notice and every request kind: stdout
  // must still hold exactly one reply per request.
  const debugConfig = await writeConfig(folder, cluster, "mastodon", {
    log: "level = debug",
    file: "debug.ini",
  });
  await using program = await Program.start({ args: ["-c", debugConfig] });
  const requests = [
    "isuser:alice:example.org",
    `auth:alice:example.org:${PASSWORD}`,
    "auth:alice:example.org:x",
    "",
    "bogus:frame",
  ];
  for (const request of requests) await program.request(request);
  const result = await program.finish();
  assert.match(result.stderr, /accepted isuser alice@example\.org/);
});

Deno.test("program warns at start-up when no domains are set", async () => {
  const anyDomain = await writeConfig(folder, cluster, "mastodon", {
    xmpp: "",
    file: "any-domain.ini",
    log: "level = info",
  });
  await using program = await Program.start({ args: ["-c", anyDomain] });
  assert.equal(await program.request("isuser:alice:any.example"), true);
  const { stderr } = await program.finish();
  assert.match(
    stderr,
    /warn no \[xmpp\] domains configured: users of every XMPP domain are looked up as this instance's accounts; set \[xmpp\] domains to the instance's domains/,
  );
  assert.match(stderr, /info started auth-mastodon .* domains \(any\), schema /);
});

Deno.test("program answers false when the config is invalid under ejabberd", async () => {
  const badConfig = `${folder}/bad.ini`;
  await Deno.writeTextFile(badConfig, "[database]\nport = eighty\n");
  await using program = await Program.start({ args: ["-c", badConfig] });
  assert.equal(await program.request("isuser:alice:example.org"), false);
  assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), false);
  const result = await program.finish();
  assert.match(
    result.stderr,
    new RegExp(
      `error Invalid config "${badConfig}": key "database\\.port" \\(line 2\\) must be a port ` +
        `number from 1 to 65535, or one per host separated by commas, got "eighty"; replying ` +
        `false to every request until the file is fixed and the program gets SIGHUP`,
    ),
  );
  assert.match(result.stderr, /error isuser alice@example\.org reason=not-configured/);
});

Deno.test("program prints a config error and exits 2 at a terminal", async () => {
  const badConfig = `${folder}/bad-terminal.ini`;
  await Deno.writeTextFile(badConfig, "[log]\nlevel = loud\n");
  // script(1) gives the program a terminal on stdin, as when an admin runs it.
  const command = [Deno.execPath(), ...await startTaskArguments(), "-c", badConfig]
    .map((word) => `'${word}'`).join(" ");
  const output = await new Deno.Command("script", {
    args: ["-qec", command, "/dev/null"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  assert.equal(output.code, 2, text);
  assert.match(
    text,
    /auth-mastodon: Invalid config ".*bad-terminal\.ini": key "log\.level" \(line 2\) must be one of "error", "warn", "info", "debug", got "loud"/,
  );
});

Deno.test("program --help and --version print to stdout", async () => {
  const run = async (args: string[]) => {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [...await startTaskArguments(), ...args],
      stdin: "null",
      env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    }).output();
    return {
      code: output.code,
      stdout: new TextDecoder().decode(output.stdout),
      stderr: new TextDecoder().decode(output.stderr),
    };
  };
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^auth-mastodon \d+\.\d+\.\d+: ejabberd external authentication/);
  for (
    const expected of [
      "auth-mastodon check [-c FILE]",
      "auth-mastodon test USER@DOMAIN [-c FILE]",
      "-c, --config FILE   configuration file (default /etc/ejabberd/auth-mastodon.ini)",
      "SIGHUP            reopen the log file and reload the configuration",
      "SIGTERM, SIGINT   finish the request in flight",
    ]
  ) {
    assert.ok(help.stdout.includes(expected), `--help lacks "${expected}"`);
  }
  const version = await run(["--version"]);
  assert.equal(version.code, 0);
  assert.equal(version.stdout, `auth-mastodon ${VERSION}\n`);

  const unknown = await run(["--verbose"]);
  assert.equal(unknown.code, 2);
  assert.equal(unknown.stdout, "");
  assert.match(
    unknown.stderr,
    /auth-mastodon: Unknown option '--verbose'.*run auth-mastodon --help/,
  );
});

Deno.test("start and compile tasks share the permission set", async () => {
  const args = await startTaskArguments();
  assert.deepEqual(args, [
    "run",
    "--config",
    `${REPO_ROOT}/deno.json`,
    "--quiet",
    "--no-prompt",
    "--permission-set=auth-mastodon",
    "--v8-flags=--optimize-for-size",
    `${REPO_ROOT}/main.ts`,
  ]);
  const config = JSON.parse(await Deno.readTextFile(`${REPO_ROOT}/deno.json`));
  assert.equal(config.tasks.compile, "deno task compile:x86_64 && deno task compile:aarch64");
  for (const [task, target] of [["compile:x86_64", "x86_64"], ["compile:aarch64", "aarch64"]]) {
    assert.equal(
      config.tasks[task],
      `deno compile --permission-set=auth-mastodon --v8-flags=--optimize-for-size ` +
        `--target ${target}-unknown-linux-gnu ` +
        `--output dist/${target}-linux/auth-mastodon main.ts`,
    );
  }
  // The permissions are defined once, in the set both tasks name.
  assert.deepEqual(config.permissions["auth-mastodon"], {
    read: true,
    write: true,
    net: true,
    env: ["PGAPPNAME", "PGTARGETSESSIONATTRS"],
  });
});
