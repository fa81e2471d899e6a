import assert from "node:assert/strict";
import { Logger, logSafe, REPEAT_WINDOW_MS } from "../lib/log.ts";

async function withFolder(body: (folder: string) => Promise<void>): Promise<void> {
  const folder = await Deno.makeTempDir();
  try {
    await body(folder);
  } finally {
    await Deno.remove(folder, { recursive: true });
  }
}

function lines(text: string): string[] {
  return text.split("\n").filter((line) => line !== "");
}

Deno.test("Logger writes timestamped lines at or above its level", async () => {
  await withFolder(async (folder) => {
    const file = `${folder}/auth.log`;
    const logger = new Logger({ level: "info", file, now: () => Date.UTC(2026, 0, 2, 3, 4, 5, 6) });
    logger.debug("hidden");
    logger.info("shown");
    logger.write("info", "accepted", "auth alice@example.org reason=ok");
    logger.error("broken");
    logger.close();
    assert.deepEqual(lines(await Deno.readTextFile(file)), [
      "2026-01-02T03:04:05.006Z info shown",
      "2026-01-02T03:04:05.006Z accepted auth alice@example.org reason=ok",
      "2026-01-02T03:04:05.006Z error broken",
    ]);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o640);
  });
});

Deno.test("Logger counts repeats and writes one summary", async () => {
  await withFolder(async (folder) => {
    const file = `${folder}/auth.log`;
    let now = 1_000_000;
    const logger = new Logger({ level: "info", file, now: () => now });
    for (let count = 0; count < 100; count++) {
      logger.repeated("error", "database-unavailable", "error", `attempt ${count}`);
      now += 100;
    }
    now += REPEAT_WINDOW_MS;
    logger.repeated("error", "database-unavailable", "error", "attempt 100");
    logger.close();
    const written = lines(await Deno.readTextFile(file)).map((line) => line.slice(25));
    assert.deepEqual(written, [
      "error attempt 0",
      "error repeated 99 more times in 70 s (database-unavailable), last: attempt 99",
      "error attempt 100",
    ]);
  });
});

Deno.test("Logger flushes pending repeat counts on close", async () => {
  await withFolder(async (folder) => {
    const file = `${folder}/auth.log`;
    const logger = new Logger({ level: "info", file, now: () => 5000 });
    logger.repeated("error", "key", "error", "first");
    logger.repeated("error", "key", "error", "second");
    logger.repeated("error", "key", "error", "third");
    logger.close();
    const written = lines(await Deno.readTextFile(file)).map((line) => line.slice(25));
    assert.deepEqual(written, [
      "error first",
      "error repeated 2 more times in 1 s (key), last: third",
    ]);
  });
});

Deno.test("Logger reopen() starts a new file after rotation", async () => {
  await withFolder(async (folder) => {
    const file = `${folder}/auth.log`;
    const logger = new Logger({ level: "info", file });
    logger.info("before rotation");
    await Deno.rename(file, `${folder}/auth.log.1`);
    logger.info("still the old file");
    logger.reopen();
    logger.info("after rotation");
    logger.close();
    const old = await Deno.readTextFile(`${folder}/auth.log.1`);
    const current = await Deno.readTextFile(file);
    assert.match(old, /info before rotation\n.*info still the old file\n$/);
    assert.match(current, /^\S+ info after rotation\n$/);
  });
});

Deno.test("Logger falls back to stderr when the file cannot be opened", async () => {
  await withFolder(async (folder) => {
    const written: string[] = [];
    const stderr = {
      writeSync(bytes: Uint8Array) {
        written.push(new TextDecoder().decode(bytes));
        return bytes.length;
      },
    };
    const logger = new Logger({ level: "info", file: `${folder}/missing/auth.log`, stderr });
    assert.equal(logger.file, `${folder}/missing/auth.log`);
    logger.info("goes to stderr");
    logger.close();
    assert.equal(await Deno.stat(`${folder}/missing`).catch(() => undefined), undefined);
    assert.equal(written.length, 2);
    assert.match(
      written[0],
      new RegExp(`error cannot write log file "${folder}/missing/auth.log": .*No such file`),
    );
    assert.match(written[0], /check that the folder exists and is writable/);
    assert.match(written[1], /info goes to stderr\n$/);
  });
});

Deno.test("Logger copies errors to stderr when asked", async () => {
  await withFolder(async (folder) => {
    const written: string[] = [];
    const stderr = {
      writeSync(bytes: Uint8Array) {
        written.push(new TextDecoder().decode(bytes));
        return bytes.length;
      },
    };
    const logger = new Logger({
      level: "info",
      file: `${folder}/auth.log`,
      errorsToStderr: true,
      stderr,
    });
    logger.info("file only");
    logger.error("both places");
    logger.close();
    assert.equal(written.length, 1);
    assert.match(written[0], /error both places\n$/);
    assert.match(await Deno.readTextFile(`${folder}/auth.log`), /file only\n.*both places\n$/);
  });
});

Deno.test("logSafe() escapes control characters and cuts long text", () => {
  assert.equal(logSafe("alice"), "alice");
  assert.equal(logSafe("al ice\nnext\u0000\\"), "al\\x20ice\\x0anext\\x00\\x5c");
  assert.equal(logSafe("a b", { spaces: true }), "a b");
  assert.equal(logSafe("line\u2028sep"), "line\\u2028sep");
  assert.equal(logSafe("x".repeat(250)), `${"x".repeat(200)}...`);
  assert.equal(logSafe("ä€"), "ä€");
});
