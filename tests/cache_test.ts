import assert from "node:assert/strict";
import { PasswordCache } from "../lib/cache.ts";

const encoder = new TextEncoder();
const HASH_A = "$2a$10$/D8RYL0zTKOsTOhfTvibouJjzStJXE6Qs88UrQ.WIq7AtiZPxtb0q";
const HASH_B = "$2a$10$h1a/d1TGtp6i.Oq/scgEBev/FvqTGH7fCL/sl0n5h7gHj9uiGULW6";

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => now += ms };
}

Deno.test("PasswordCache hits for the same user, hash and password", () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 10 });
  const password = encoder.encode("secret one");
  assert.equal(cache.has("1", HASH_A, password), false);
  cache.add("1", HASH_A, password);
  assert.equal(cache.has("1", HASH_A, password), true);
  assert.equal(cache.size, 1);
});

Deno.test("PasswordCache misses for another password or user", () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 10 });
  cache.add("1", HASH_A, encoder.encode("secret one"));
  assert.equal(cache.has("1", HASH_A, encoder.encode("secret two")), false);
  assert.equal(cache.has("2", HASH_A, encoder.encode("secret one")), false);
  // A wrong password leaves the entry for the right one in place.
  assert.equal(cache.has("1", HASH_A, encoder.encode("secret one")), true);
});

Deno.test("PasswordCache misses after a password change", () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 10 });
  const password = encoder.encode("secret one");
  cache.add("1", HASH_A, password);
  assert.equal(cache.has("1", HASH_B, password), false);
  assert.equal(cache.size, 0);
  assert.equal(cache.has("1", HASH_A, password), false);
});

Deno.test("PasswordCache entries expire after the TTL", () => {
  const time = clock();
  const cache = new PasswordCache({ ttlSeconds: 60, maxEntries: 10, now: time.now });
  const password = encoder.encode("secret one");
  cache.add("1", HASH_A, password);
  time.advance(59_999);
  assert.equal(cache.has("1", HASH_A, password), true);
  time.advance(1);
  assert.equal(cache.has("1", HASH_A, password), false);
  assert.equal(cache.size, 0);
});

Deno.test("PasswordCache keeps at most maxEntries, dropping the least recent", () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 3 });
  const password = encoder.encode("secret");
  for (const id of ["1", "2", "3"]) cache.add(id, HASH_A, password);
  assert.equal(cache.has("1", HASH_A, password), true);
  cache.add("4", HASH_A, password);
  assert.equal(cache.size, 3);
  assert.equal(cache.has("2", HASH_A, password), false);
  assert.equal(cache.has("1", HASH_A, password), true);
  assert.equal(cache.has("3", HASH_A, password), true);
  assert.equal(cache.has("4", HASH_A, password), true);
});

Deno.test("PasswordCache with TTL 0 stores nothing", () => {
  const cache = new PasswordCache({ ttlSeconds: 0, maxEntries: 10 });
  const password = encoder.encode("secret");
  cache.add("1", HASH_A, password);
  assert.equal(cache.enabled, false);
  assert.equal(cache.size, 0);
  assert.equal(cache.has("1", HASH_A, password), false);
});

Deno.test("PasswordCache holds no password bytes", () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 10 });
  cache.add("1", HASH_A, encoder.encode("plain-secret-text"));
  const dump = Deno.inspect(cache, { showHidden: true, depth: 10 });
  assert.ok(!dump.includes("plain-secret-text"));
});
