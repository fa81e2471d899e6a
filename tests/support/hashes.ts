/**
 * Cost-10 bcrypt hashes made by Ruby's bcrypt gem, the implementation
 * Mastodon uses; tests/fixtures/make_hashes.rb writes them.
 *
 * @module
 */

interface HashFixture {
  password_hex: string;
  hash: string;
}

const HASHES: Record<string, HashFixture> = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/hashes.json", import.meta.url)),
);

function hexToBytes(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g)!.map((pair) => parseInt(pair, 16)));
}

/** Password bytes and hash of a fixture, by name (ascii, multibyte, long, ...). */
export function fixture(name: string): { password: Uint8Array; hash: string } {
  const entry = HASHES[name];
  if (entry === undefined) throw new Error(`no hash fixture named "${name}"`);
  return { password: hexToBytes(entry.password_hex), hash: entry.hash };
}

/** Names of all hash fixtures. */
export function fixtureNames(): string[] {
  return Object.keys(HASHES);
}
