import assert from "node:assert/strict";
import {
  encodeReply,
  FrameReader,
  MAX_REQUEST_BYTES,
  REPLY_FALSE,
  REPLY_TRUE,
} from "../lib/frame.ts";

const encoder = new TextEncoder();

function frame(body: Uint8Array | string): Uint8Array {
  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  const framed = new Uint8Array(2 + bytes.length);
  framed[0] = bytes.length >> 8;
  framed[1] = bytes.length & 0xff;
  framed.set(bytes, 2);
  return framed;
}

function text(bytes: Uint8Array | undefined): string | undefined {
  return bytes === undefined ? undefined : new TextDecoder().decode(bytes);
}

Deno.test("encodeReply() returns the exact reply bytes", () => {
  assert.deepEqual([...encodeReply(true)], [0x00, 0x02, 0x00, 0x01]);
  assert.deepEqual([...encodeReply(false)], [0x00, 0x02, 0x00, 0x00]);
  assert.equal(REPLY_TRUE.length, 4);
  assert.equal(REPLY_FALSE.length, 4);
});

Deno.test("FrameReader joins a frame split across reads", () => {
  const reader = new FrameReader();
  const bytes = frame("isuser:alice:example.org");
  for (const byte of bytes.subarray(0, bytes.length - 1)) {
    reader.push(Uint8Array.of(byte));
    assert.equal(reader.next(), undefined);
  }
  reader.push(bytes.subarray(bytes.length - 1));
  assert.equal(text(reader.next()), "isuser:alice:example.org");
  assert.equal(reader.next(), undefined);
  assert.equal(reader.pendingBytes, 0);
});

Deno.test("FrameReader splits several frames in one read", () => {
  const reader = new FrameReader();
  const joined = [frame("a"), frame("bb"), frame("ccc")];
  const all = new Uint8Array(joined.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of joined) {
    all.set(part, offset);
    offset += part.length;
  }
  reader.push(all);
  assert.equal(text(reader.next()), "a");
  assert.equal(text(reader.next()), "bb");
  assert.equal(text(reader.next()), "ccc");
  assert.equal(reader.next(), undefined);
});

Deno.test("FrameReader returns a zero-length frame as empty", () => {
  const reader = new FrameReader();
  reader.push(Uint8Array.of(0, 0, 0, 1, 0x78));
  assert.deepEqual(reader.next(), new Uint8Array(0));
  assert.equal(text(reader.next()), "x");
});

Deno.test("FrameReader reads the 65,535-byte maximum as unsigned", () => {
  const reader = new FrameReader();
  const body = new Uint8Array(MAX_REQUEST_BYTES).fill(0x61);
  const bytes = frame(body);
  assert.deepEqual([...bytes.subarray(0, 2)], [0xff, 0xff]);
  reader.push(bytes.subarray(0, 40_000));
  assert.equal(reader.next(), undefined);
  reader.push(bytes.subarray(40_000));
  const result = reader.next();
  assert.equal(result?.length, MAX_REQUEST_BYTES);
  assert.deepEqual(result, body);
});

Deno.test("FrameReader reads a 32,768-byte frame as unsigned", () => {
  const reader = new FrameReader();
  const body = new Uint8Array(0x8000).fill(0x62);
  reader.push(frame(body));
  assert.equal(reader.next()?.length, 0x8000);
});

Deno.test("FrameReader keeps a truncated frame pending", () => {
  const reader = new FrameReader();
  reader.push(Uint8Array.of(0x00, 0x0a, 0x61, 0x62, 0x63));
  assert.equal(reader.next(), undefined);
  assert.equal(reader.pendingBytes, 5);
  assert.equal(reader.pendingFrameLength, 10);

  const lonePrefixByte = new FrameReader();
  lonePrefixByte.push(Uint8Array.of(0x00));
  assert.equal(lonePrefixByte.next(), undefined);
  assert.equal(lonePrefixByte.pendingFrameLength, undefined);
});

Deno.test("FrameReader returns copies that survive later reads", () => {
  const reader = new FrameReader();
  reader.push(frame("first"));
  const first = reader.next();
  reader.push(frame("second-and-longer"));
  assert.equal(text(first), "first");
  assert.equal(text(reader.next()), "second-and-longer");
});

Deno.test("FrameReader handles many frames through a small buffer", () => {
  const reader = new FrameReader();
  for (let round = 0; round < 2000; round++) {
    reader.push(frame(`auth:user${round}:example.org:password${round}`));
    assert.equal(text(reader.next()), `auth:user${round}:example.org:password${round}`);
  }
  assert.equal(reader.pendingBytes, 0);
});
