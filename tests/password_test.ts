import assert from "node:assert/strict";
import { DUMMY_HASH, isBcryptHash, verifyPassword } from "../lib/password.ts";
import { fixture } from "./support/hashes.ts";

const encoder = new TextEncoder();

function concat(left: Uint8Array, right: Uint8Array): Uint8Array {
  const joined = new Uint8Array(left.length + right.length);
  joined.set(left);
  joined.set(right, left.length);
  return joined;
}

Deno.test("verifyPassword() accepts hashes from Ruby's bcrypt gem", async () => {
  for (
    const name of ["ascii", "ascii_b", "ascii_y", "multibyte", "long", "colons", "invalid_utf8"]
  ) {
    const { password, hash } = fixture(name);
    assert.equal(await verifyPassword(password, hash), true, name);
  }
});

Deno.test("verifyPassword() reads the three hash prefixes", () => {
  assert.ok(fixture("ascii").hash.startsWith("$2a$10$"));
  assert.ok(fixture("ascii_b").hash.startsWith("$2b$10$"));
  assert.ok(fixture("ascii_y").hash.startsWith("$2y$10$"));
});

Deno.test("verifyPassword() rejects a wrong password", async () => {
  const { hash } = fixture("ascii");
  assert.equal(await verifyPassword(encoder.encode("correct horse battery stapl"), hash), false);
  assert.equal(await verifyPassword(encoder.encode("Correct horse battery staple"), hash), false);
});

Deno.test("verifyPassword() counts only the first 72 bytes", async () => {
  // 40 × "ä" is 80 bytes; bcrypt reads bytes 1 to 72.
  const { password, hash } = fixture("long");
  assert.equal(password.length, 80);
  assert.equal(await verifyPassword(password.subarray(0, 72), hash), true);
  assert.equal(await verifyPassword(concat(password, encoder.encode("anything")), hash), true);
  assert.equal(await verifyPassword(password.subarray(0, 71), hash), false);
});

Deno.test("verifyPassword() compares bytes, not decoded text", async () => {
  const { password, hash } = fixture("invalid_utf8");
  // Decoding would turn every invalid byte into U+FFFD; the bytes differ.
  const decodedAndEncoded = encoder.encode(new TextDecoder().decode(password));
  assert.notDeepEqual(decodedAndEncoded, password);
  assert.equal(await verifyPassword(decodedAndEncoded, hash), false);
  assert.equal(await verifyPassword(password, hash), true);
});

Deno.test("verifyPassword() never matches an empty or foreign hash", async () => {
  const password = encoder.encode("anything");
  assert.equal(await verifyPassword(password, ""), false);
  assert.equal(await verifyPassword(password, "plaintext"), false);
  assert.equal(await verifyPassword(password, "$argon2id$v=19$m=65536,t=3,p=4$abc$def"), false);
  assert.equal(await verifyPassword(password, "$2x$10$" + "a".repeat(53)), false);
});

Deno.test("verifyPassword() rejects a password with a NUL byte", async () => {
  // Ruby's bcrypt raises ArgumentError for such a password, so Mastodon never stored one.
  const { password, hash } = fixture("ascii");
  assert.equal(await verifyPassword(concat(password, Uint8Array.of(0)), hash), false);
});

Deno.test("verifyPassword() takes as long for a missing hash", async () => {
  const { password, hash } = fixture("ascii");
  const time = async (target: string) => {
    const started = performance.now();
    for (let round = 0; round < 3; round++) await verifyPassword(password, target);
    return performance.now() - started;
  };
  await time(hash);
  const known = await time(hash);
  const unknown = await time("");
  // Both run one cost-10 bcrypt; the bound is loose so a busy machine passes.
  assert.ok(unknown > known * 0.5, `unknown ${unknown} ms, known ${known} ms`);
  assert.ok(isBcryptHash(DUMMY_HASH));
  assert.ok(DUMMY_HASH.startsWith("$2a$10$"));
});

Deno.test("isBcryptHash() accepts costs 04 to 31 only", () => {
  const tail = fixture("ascii").hash.slice(7);
  assert.equal(isBcryptHash(`$2a$04$${tail}`), true);
  assert.equal(isBcryptHash(`$2b$31$${tail}`), true);
  assert.equal(isBcryptHash(`$2a$03$${tail}`), false);
  assert.equal(isBcryptHash(`$2a$32$${tail}`), false);
  assert.equal(isBcryptHash(`$2a$10$${tail}x`), false);
});
