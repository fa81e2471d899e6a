/**
 * A seeded, reproducible fuzz test: more than 100,000 random and mutated
 * frames through the real program. Every complete frame must get exactly one
 * valid 4-byte reply, the program must not crash or write anything else to
 * stdout, and its memory must stay flat.
 *
 * Run with another seed: FUZZ_SEED=1234 deno test -A tests/fuzz_test.ts
 */

import assert from "node:assert/strict";
import { createMastodonDatabase, PASSWORD, writeConfig } from "./support/mastodon.ts";
import { TestCluster } from "./support/postgres.ts";
import { concat, frame, Program } from "./support/program.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? "20261204");
const FRAME_COUNT = 100_000;
const BATCH_SIZE = 250;
/** Allowed growth of resident memory between the first and the last measurement. */
const MAX_RSS_GROWTH_BYTES = 16 * 1024 * 1024;

const cluster = await TestCluster.start();
await createMastodonDatabase(cluster, "mastodon", "main");
const folder = await Deno.makeTempDir({ dir: "/tmp" });

Deno.test.afterAll(async () => {
  await cluster.destroy();
  await Deno.remove(folder, { recursive: true });
});

/** mulberry32: a small, fast 32-bit PRNG, enough for reproducible test input. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

const encoder = new TextEncoder();
const COMMANDS = ["auth", "isuser", "setpass", "tryregister", "removeuser", "removeuser3"];

class FrameGenerator {
  readonly #next: () => number;

  constructor(seed: number) {
    this.#next = random(seed);
  }

  integer(limit: number): number {
    return Math.floor(this.#next() * limit);
  }

  chance(probability: number): boolean {
    return this.#next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.integer(items.length)];
  }

  bytes(length: number): Uint8Array {
    const bytes = new Uint8Array(length);
    for (let index = 0; index < length; index++) bytes[index] = this.integer(256);
    return bytes;
  }

  /** Returns a field of one of several kinds: ASCII, UTF-8, invalid UTF-8, NUL bytes, colons. */
  field(): Uint8Array {
    const length = this.integer(40);
    switch (this.integer(6)) {
      case 0:
        return encoder.encode(
          "x".repeat(length).replace(/x/g, () => this.pick([..."abcxyz019_."])),
        );
      case 1:
        return encoder.encode(
          Array.from({ length }, () => this.pick(["ä", "€", "😀", "a", "ß"])).join(""),
        );
      case 2:
        return this.bytes(length);
      case 3:
        return Uint8Array.from({ length: length + 1 }, () => this.pick([0, 0x61, 0x00, 0x3a]));
      case 4:
        return Uint8Array.from([0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x90, 0x28, 0xbc]);
      default:
        return encoder.encode("");
    }
  }

  /** Returns a request with a real or bogus command and too few, right or too many fields. */
  structured(): Uint8Array {
    const command = this.chance(0.85)
      ? this.pick(COMMANDS)
      : this.pick(["AUTH", "auth ", "", "isUser", "x"]);
    const fieldCount = this.integer(7);
    const parts: Uint8Array[] = [encoder.encode(command)];
    for (let index = 0; index < fieldCount; index++) {
      parts.push(Uint8Array.of(0x3a));
      // The domain is mostly foreign, so most requests need no database.
      parts.push(index === 1 && this.chance(0.5) ? encoder.encode("fuzz.example") : this.field());
    }
    return concat(...parts);
  }

  /** Returns a valid request with a few bytes flipped, inserted or removed. */
  mutated(): Uint8Array {
    const base = encoder.encode(
      this.pick([
        "isuser:alice:other.example",
        "auth:alice:other.example:correct horse",
        "setpass:alice:example.org:new",
        "removeuser:bob:example.org",
      ]),
    );
    const bytes = Array.from(base);
    const edits = 1 + this.integer(4);
    for (let edit = 0; edit < edits; edit++) {
      const position = this.integer(bytes.length + 1);
      const kind = this.integer(3);
      if (kind === 0 && bytes.length > 0) bytes[position % bytes.length] = this.integer(256);
      else if (kind === 1) bytes.splice(position, 0, this.integer(256));
      else bytes.splice(position, 1);
    }
    return Uint8Array.from(bytes);
  }

  /** Returns one frame body of any kind, with the kind's name. */
  next(): { kind: string; body: Uint8Array } {
    const roll = this.#next();
    if (roll < 0.0005) return { kind: "max-length", body: this.maxLength() };
    if (roll < 0.0007) {
      return {
        kind: "auth-local",
        body: encoder.encode(`auth:u${this.integer(1e6)}:example.org:pw`),
      };
    }
    if (roll < 0.01) {
      return {
        kind: "isuser-local",
        body: concat(encoder.encode("isuser:"), this.field(), encoder.encode(":example.org")),
      };
    }
    if (roll < 0.25) return { kind: "random", body: this.bytes(this.integer(300)) };
    if (roll < 0.35) return { kind: "empty", body: new Uint8Array(0) };
    if (roll < 0.6) return { kind: "mutated", body: this.mutated() };
    return { kind: "structured", body: this.structured() };
  }

  maxLength(): Uint8Array {
    const body = this.bytes(0xffff);
    if (this.chance(0.5)) body.set(encoder.encode("auth:alice:other.example:"));
    return body;
  }
}

function residentBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(match, "no VmRSS in /proc status");
  return Number(match[1]) * 1024;
}

Deno.test(`fuzzed frames each get one reply (seed ${SEED})`, async () => {
  const config = await writeConfig(folder, cluster, "mastodon", { log: "level = warn" });
  await using program = await Program.start({ args: ["-c", config] });
  const generator = new FrameGenerator(SEED);
  const kinds = new Map<string, number>();
  const rss: number[] = [];
  let sent = 0;

  while (sent < FRAME_COUNT) {
    const bodies: Uint8Array[] = [];
    for (let index = 0; index < BATCH_SIZE; index++) {
      const { kind, body } = generator.next();
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      bodies.push(frame(body));
    }
    await program.send(concat(...bodies));
    const replies = await program.readStdout(4 * BATCH_SIZE, 60_000);
    for (let offset = 0; offset < replies.length; offset += 4) {
      const reply = [...replies.subarray(offset, offset + 4)];
      assert.ok(
        reply[0] === 0 && reply[1] === 2 && reply[2] === 0 && (reply[3] === 0 || reply[3] === 1),
        `invalid reply ${JSON.stringify(reply)} after ${sent + offset / 4} frames (seed ${SEED})`,
      );
    }
    sent += BATCH_SIZE;

    if (sent % 10_000 === 0) {
      // The program still decides correctly between the fuzzed frames.
      assert.equal(await program.request("isuser:alice:example.org"), true);
      assert.equal(await program.request(`auth:alice:example.org:${PASSWORD}`), true);
      rss.push(residentBytes(program.pid));
    }
  }

  // A frame cut short by EOF gets no reply, and the program exits 0.
  await program.send(Uint8Array.of(0x00, 0x40, 0x61, 0x75));
  const result = await program.finish();
  assert.doesNotMatch(result.stderr, /internal error/);

  for (
    const kind of [
      "random",
      "empty",
      "mutated",
      "structured",
      "max-length",
      "isuser-local",
      "auth-local",
    ]
  ) {
    assert.ok((kinds.get(kind) ?? 0) > 0, `no frames of kind ${kind}`);
  }
  const growth = rss[rss.length - 1] - rss[0];
  assert.ok(
    growth < MAX_RSS_GROWTH_BYTES,
    `resident memory grew by ${(growth / 1048576).toFixed(1)} MiB: ${
      rss.map((bytes) => (bytes / 1048576).toFixed(1)).join(", ")
    } MiB`,
  );
});
