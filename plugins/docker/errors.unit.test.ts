/**
 * The Docker engine's HTTP statuses (and connection failures) as the gRPC
 * statuses berth answers with, and the engine's own words in the message.
 * Errors are shaped as dockerode rejects: statusCode, json.message, and a
 * message "(HTTP code N) reason - engine words".
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BerthError, Status } from "../../src/errors.js";
import { dockerError, engineMessage, isConnectionError, isNotFound } from "./errors.js";
import { statusOfHttp } from "../kit/http-status.js";

/** An error as dockerode's modem builds it from an engine answer. */
function engineError(statusCode: number, words: string): Error & { statusCode: number; json: object } {
  return Object.assign(new Error(`(HTTP code ${statusCode}) unexpected - ${words} `), {
    statusCode,
    reason: "unexpected",
    json: { message: words },
  });
}

/** A socket error: no answer at all. */
function connectionError(code: string): Error & { code: string } {
  return Object.assign(new Error(`connect ${code} /var/run/docker.sock`), { code });
}

describe("the status table", () => {
  // The values are the kit's one table (plugins/kit/http-status.ts, pinned in kit.unit.test.ts): this driver answers with it.
  const table: [number, Status][] = [400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504, 302, 405].map(
    (code) => [code, statusOfHttp(code)],
  );
  for (const [statusCode, expected] of table) {
    test(`HTTP ${statusCode} is ${Status[expected]}, saying what berth was doing and what the engine said`, () => {
      const mapped = dockerError(engineError(statusCode, "the engine's words"), "start job container");
      assert.ok(mapped instanceof BerthError);
      assert.equal(Status[mapped.code], Status[expected]);
      assert.equal(mapped.message, "start job container: the engine's words");
      assert.equal((mapped.cause as { statusCode: number }).statusCode, statusCode);
    });
  }

  test("a failed connection (a code, no HTTP status) is UNAVAILABLE naming the code", () => {
    const mapped = dockerError(connectionError("ECONNREFUSED"), "list berth's containers and networks");
    assert.equal(Status[mapped.code], "UNAVAILABLE");
    assert.equal(
      mapped.message,
      "list berth's containers and networks: cannot reach the Docker engine (ECONNREFUSED): connect ECONNREFUSED /var/run/docker.sock",
    );
  });

  test("an error with neither a status nor a code (a bug, not the engine) is UNKNOWN", () => {
    const mapped = dockerError(new TypeError("x is not a function"), "inspect exec");
    assert.equal(Status[mapped.code], "UNKNOWN");
    assert.equal(mapped.message, "inspect exec: x is not a function");
  });

  test("a 404 for exhausted address pools is RESOURCE_EXHAUSTED with what to do, not NOT_FOUND", () => {
    const mapped = dockerError(
      engineError(404, "could not find an available, non-overlapping IPv4 address pool among the defaults"),
      "create network berth-1",
    );
    assert.equal(Status[mapped.code], "RESOURCE_EXHAUSTED");
    assert.match(mapped.message, /^create network berth-1: could not find an available/);
    assert.match(mapped.message, /berth gc.*docker network prune.*default-address-pools/);
  });

  test("a BerthError passes through as it is", () => {
    const original = new BerthError(Status.ABORTED, "the environment is being removed");
    assert.equal(dockerError(original, "start exec"), original);
  });
});

describe("the engine's words", () => {
  test("json.message is preferred; without it the HTTP wrapping is stripped from the message", () => {
    assert.equal(engineMessage(engineError(404, "No such container: abc")), "No such container: abc");
    const withoutJson = Object.assign(new Error("(HTTP code 409) conflict - container abc is not running "), {
      statusCode: 409,
      json: null,
    });
    assert.equal(engineMessage(withoutJson), "container abc is not running");
    assert.equal(engineMessage("plain text"), "plain text");
    assert.equal(engineMessage(undefined), "undefined");
  });

  test("isNotFound is 404 alone; isConnectionError needs a code and no status", () => {
    assert.equal(isNotFound(engineError(404, "gone")), true);
    assert.equal(isNotFound(engineError(409, "busy")), false);
    assert.equal(isNotFound(undefined), false);
    assert.equal(isConnectionError(connectionError("EPIPE")), true);
    assert.equal(isConnectionError(Object.assign(engineError(500, "x"), { code: "E" })), false);
    assert.equal(isConnectionError(new Error("no code")), false);
    assert.equal(isConnectionError(null), false);
  });
});
