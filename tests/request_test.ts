import assert from "node:assert/strict";
import { isMalformed, parseRequest } from "../lib/request.ts";

const encoder = new TextEncoder();

function parse(text: string | Uint8Array) {
  return parseRequest(typeof text === "string" ? encoder.encode(text) : text);
}

function bytes(...parts: (string | number[])[]): Uint8Array {
  const chunks = parts.map((part) =>
    typeof part === "string" ? encoder.encode(part) : Uint8Array.from(part)
  );
  const joined = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.length;
  }
  return joined;
}

Deno.test("parseRequest() reads auth with colons in the password", () => {
  const request = parse("auth:alice:example.org:pa:ss:wo:rd::");
  assert.ok(!isMalformed(request));
  assert.equal(request.command, "auth");
  assert.equal(request.user, "alice");
  assert.equal(request.domain, "example.org");
  assert.ok("password" in request);
  assert.equal(new TextDecoder().decode(request.password), "pa:ss:wo:rd::");
});

Deno.test("parseRequest() keeps password bytes that are not UTF-8", () => {
  const request = parse(bytes("auth:alice:example.org:", [0xff, 0xfe, 0x80, 0x00, 0x3a]));
  assert.ok(!isMalformed(request));
  assert.ok("password" in request);
  assert.deepEqual([...request.password], [0xff, 0xfe, 0x80, 0x00, 0x3a]);
});

Deno.test("parseRequest() reads isuser and UTF-8 user names", () => {
  const request = parse("isuser:älice:example.org");
  assert.ok(!isMalformed(request));
  assert.equal(request.command, "isuser");
  assert.equal(request.user, "älice");
  assert.equal(request.domain, "example.org");
});

Deno.test("parseRequest() reads every write command", () => {
  for (
    const text of [
      "setpass:alice:example.org:new",
      "tryregister:alice:example.org:new",
      "removeuser:alice:example.org",
      "removeuser3:alice:example.org:old",
    ]
  ) {
    const request = parse(text);
    assert.ok(!isMalformed(request), text);
    assert.equal(request.command, text.split(":")[0]);
    assert.equal(request.user, "alice");
  }
});

Deno.test("parseRequest() rejects malformed requests with a reason", () => {
  const cases: [string | Uint8Array, string][] = [
    ["", "empty request"],
    ["hunter2", "unknown command (7 bytes)"],
    ["AUTH:alice:example.org:x", "unknown command (4 bytes)"],
    ["auth", "auth needs 4 fields, got 1"],
    ["auth:alice", "auth needs 4 fields, got 2"],
    ["auth:alice:example.org", "auth needs 4 fields, got 3"],
    ["isuser:alice:example.org:extra", "isuser needs 3 fields, got 4"],
    ["removeuser:alice:example.org:extra", "removeuser needs 3 fields, got 4"],
    ["auth::example.org:x", "user is empty"],
    ["auth:alice::x", "domain is empty"],
    ["auth:alice:example.org:", "password is empty"],
    ["isuser::example.org", "user is empty"],
    [bytes("isuser:", [0xc3, 0x28], ":example.org"), "user is not valid UTF-8"],
    [bytes("auth:alice:", [0xff], ":x"), "domain is not valid UTF-8"],
    [bytes([0xff, 0xfe], ":alice:example.org:x"), "unknown command (2 bytes)"],
  ];
  for (const [input, reason] of cases) {
    const request = parse(input);
    assert.ok(isMalformed(request), `expected malformed: ${JSON.stringify(String(input))}`);
    assert.equal(request.malformed, reason);
  }
});

Deno.test("parseRequest() never puts unknown command text in the reason", () => {
  const request = parse("s3cret-password-typed-into-the-wrong-place:alice:example.org");
  assert.ok(isMalformed(request));
  assert.ok(!request.malformed.includes("s3cret"));
  assert.equal(request.user, undefined);
});
