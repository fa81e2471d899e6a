import assert from "node:assert/strict";
import { PasswordCache } from "../lib/cache.ts";

const encoder = new TextEncoder();
const HASH_A = "$2a$10$/D8RYL0zTKOsTOhfTvibouJjzStJXE6Qs88UrQ.WIq7AtiZPxtb0q";
const HASH_B = "$2a$10$h1a/d1TGtp6i.Oq/scgEBev/FvqTGH7fCL/sl0n5h7gHj9uiGULW6";

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => now += ms };
}

Deno.test("PasswordCache hits for the same user, hash and password", async () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 10 });
  const password = encoder.encode("secret one");
  assert.equal(await cache.has("1", HASH_A, password), false);
  await cache.add("1", HASH_A, password);
  assert.equal(await cache.has("1", HASH_A, password), true);
  assert.equal(cache.size, 1);
});

Deno.test("PasswordCache misses for another password or user", async () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 10 });
  await cache.add("1", HASH_A, encoder.encode("secret one"));
  assert.equal(await cache.has("1", HASH_A, encoder.encode("secret two")), false);
  assert.equal(await cache.has("2", HASH_A, encoder.encode("secret one")), false);
  // A wrong password leaves the entry for the right one in place.
  assert.equal(await cache.has("1", HASH_A, encoder.encode("secret one")), true);
});

Deno.test("PasswordCache misses after a password change", async () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 10 });
  const password = encoder.encode("secret one");
  await cache.add("1", HASH_A, password);
  assert.equal(await cache.has("1", HASH_B, password), false);
  assert.equal(cache.size, 0);
  assert.equal(await cache.has("1", HASH_A, password), false);
});

Deno.test("PasswordCache entries expire after the TTL", async () => {
  const time = clock();
  const cache = new PasswordCache({ ttlSeconds: 60, maxEntries: 10, now: time.now });
  const password = encoder.encode("secret one");
  await cache.add("1", HASH_A, password);
  time.advance(59_999);
  assert.equal(await cache.has("1", HASH_A, password), true);
  time.advance(1);
  assert.equal(await cache.has("1", HASH_A, password), false);
  assert.equal(cache.size, 0);
});

Deno.test("PasswordCache keeps at most maxEntries, dropping the least recent", async () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 3 });
  const password = encoder.encode("secret");
  for (const id of ["1", "2", "3"]) await cache.add(id, HASH_A, password);
  assert.equal(await cache.has("1", HASH_A, password), true);
  await cache.add("4", HASH_A, password);
  assert.equal(cache.size, 3);
  assert.equal(await cache.has("2", HASH_A, password), false);
  assert.equal(await cache.has("1", HASH_A, password), true);
  assert.equal(await cache.has("3", HASH_A, password), true);
  assert.equal(await cache.has("4", HASH_A, password), true);
});

Deno.test("PasswordCache with TTL 0 stores nothing", async () => {
  const cache = new PasswordCache({ ttlSeconds: 0, maxEntries: 10 });
  const password = encoder.encode("secret");
  await cache.add("1", HASH_A, password);
  assert.equal(cache.enabled, false);
  assert.equal(cache.size, 0);
  assert.equal(await cache.has("1", HASH_A, password), false);
});

Deno.test("PasswordCache holds no password bytes", async () => {
  const cache = new PasswordCache({ ttlSeconds: 900, maxEntries: 10 });
  await cache.add("1", HASH_A, encoder.encode("plain-secret-text"));
  const dump = Deno.inspect(cache, { showHidden: true, depth: 10 });
  assert.ok(!dump.includes("plain-secret-text"));
});
