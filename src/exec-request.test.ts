import assert from "node:assert/strict";
import { test } from "node:test";
import { Status } from "./errors.js";
import { checkExecSpec, maxArgumentBytes, redactEnvValues } from "./exec-request.js";

const spec = (command: string[], env: Record<string, string> = {}) => ({
  command,
  env,
  user: "",
  workdir: "/",
});

/** Refused with INVALID_ARGUMENT matching `pattern`, and the secret nowhere in the message. */
const refused = (value: ReturnType<typeof spec>, pattern: RegExp) =>
  assert.throws(
    () => checkExecSpec(value),
    (err: { code?: Status; message: string }) =>
      err.code === Status.INVALID_ARGUMENT && pattern.test(err.message) && !err.message.includes("SECRET"),
  );

test("argv and env a process cannot hold are INVALID_ARGUMENT naming where, never the value", () => {
  refused(spec(["sh", "-c", "echo SECRET\0"]), /^argument 2 of the command contains a NUL byte/);
  refused(spec(["SECRET\0"]), /^the program name contains a NUL byte/);
  refused(spec(["true"], { TOKEN: "SECRET\0tail" }), /the value of TOKEN contains a NUL byte/);
  refused(spec(["true"], { "A=SECRET": "x" }), /variable 1 has an empty name or one holding "="/);
  refused(
    spec(["echo", "x".repeat(200 * 1024)]),
    /argument 1 of the command is 204800 bytes.*MAX_ARG_STRLEN/,
  );
  refused(spec(["true"], { BIG: "SECRET".repeat(2 * 1024 * 1024) }), /BIG is \d+ bytes/);
  refused(spec(["echo", ...Array.from({ length: 30_000 }, () => "x".repeat(40))]), /30001 arguments/);
  assert.doesNotThrow(() => checkExecSpec(spec(["echo", "x".repeat(maxArgumentBytes)], { A: "1" })));
});

test("a user Docker and Kubernetes cannot take is INVALID_ARGUMENT saying what they take", () => {
  const withUser = (user: string) => ({ ...spec(["true"]), user });
  refused(withUser("-1"), /^user: a uid must be a number from 0 to 2147483647$/);
  refused(withUser("0:4294967296"), /^user: a gid must be a number from 0 to 2147483647$/);
  refused(withUser("a:b:c"), /^user must be "name", "uid", "name:group" or "uid:gid"$/);
  refused(withUser("runner:"), /^user must be/);
  for (const user of ["", "root", "1001", "1001:1001", "runner:docker", "0:0"]) {
    assert.doesNotThrow(() => checkExecSpec(withUser(user)), user);
  }
});

test("a backend's message loses the env's values, each replaced by its variable's name", () => {
  const env = { TOKEN: "s3cr3t-value", SHORT: "ab", LONGER: "s3cr3t-value-and-more" };
  assert.equal(
    redactEnvValues("exec failed: invalid env TOKEN=s3cr3t-value and s3cr3t-value-and-more; ab", env),
    "exec failed: invalid env TOKEN=<value of TOKEN> and <value of LONGER>; ab",
  );
});
