import assert from "node:assert/strict";
import { test } from "node:test";
import { Status } from "../errors.js";
import { CreateRequest } from "../gen/plugin/v1/plugin.js";
import { parseV1CreateEnv } from "./v1-env.js";

/** A length-delimited field, encoded by hand: tag (field << 3 | 2), a one-byte length, the bytes. */
const field = (number: number, bytes: Buffer) =>
  Buffer.concat([Buffer.from([(number << 3) | 2, bytes.length]), bytes]);
const text = (value: string) => Buffer.from(value);

test("a v1 CreateRequest's env in both encodings runners send, decoded from hand-encoded bytes", () => {
  const mapEntry = (key: string, value: string) =>
    Buffer.concat([field(1, text(key)), field(2, text(value))]);
  const wire = Buffer.concat([
    field(1, text("busybox")),
    // repeated string env = 3 (the older proto)
    field(3, text("OLD=style=1")),
    // map<string,string> env = 3 (the newest proto): each entry a message { key = 1, value = 2 }
    field(3, mapEntry("NEW", "map style")),
    field(3, Buffer.concat([field(2, text("value first")), field(1, text("ORDER"))])),
    field(3, field(1, text("ONLY_KEY"))),
  ]);
  const request = CreateRequest.decode(wire);
  assert.equal(request.image, "busybox");
  assert.deepEqual(parseV1CreateEnv(request.env), {
    OLD: "style=1",
    NEW: "map style",
    ORDER: "value first",
    ONLY_KEY: "",
  });
});

test("env entries that are neither are INVALID_ARGUMENT, naming the entry's position, never its value", () => {
  const refused = (entries: Buffer[], pattern: RegExp) =>
    assert.throws(
      () => parseV1CreateEnv(entries),
      (err: { code?: Status; message: string }) =>
        err.code === Status.INVALID_ARGUMENT && pattern.test(err.message) && !err.message.includes("secret"),
    );
  refused([text("A=1"), text("=secret")], /env entry 2 of Create is not KEY=VALUE/);
  refused([text("NOEQUALSsecret")], /env entry 1 of Create is not KEY=VALUE/);
  refused([Buffer.from([0xff, 0xfe])], /env entry 1 of Create is neither KEY=VALUE text nor a map entry/);
  refused([field(2, text("secret"))], /env entry 1 of Create is a map entry without a key/);
});
