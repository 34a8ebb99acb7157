/**
 * The Kubernetes API server's HTTP statuses (and connection failures) as the
 * gRPC statuses berth answers with, and the API server's own words (the
 * metav1.Status message) in the message. Errors are shaped as client-node's
 * ApiException: a numeric code and a body (an object, or its JSON text).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BerthError, Status } from "../../src/errors.js";
import { apiMessage, isNotFound, kubernetesError, statusCodeOf } from "./errors.js";
import { statusOfHttp } from "../kit/http-status.js";

/** An error as client-node rejects with when the API server answers. */
function apiError(code: number, body: unknown): Error & { code: number; body: unknown } {
  return Object.assign(new Error(`HTTP-Code: ${code} Message: Unknown API Status Code!`), { code, body });
}

const status = (message: string) => ({ kind: "Status", apiVersion: "v1", status: "Failure", message });

describe("the status table", () => {
  // The values are the kit's one table (plugins/kit/http-status.ts, pinned in kit.unit.test.ts): this driver answers with it.
  const table: [number, Status][] = [400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504, 302, 405].map(
    (code) => [code, statusOfHttp(code)],
  );
  for (const [code, expected] of table) {
    test(`HTTP ${code} is ${Status[expected]}, saying what berth was doing and what the API server said`, () => {
      const mapped = kubernetesError(apiError(code, status("the API server's words")), "create pod berth-1");
      assert.ok(mapped instanceof BerthError);
      assert.equal(Status[mapped.code], Status[expected]);
      assert.equal(mapped.message, "create pod berth-1: the API server's words");
      assert.equal((mapped.cause as { code: number }).code, code);
    });
  }

  test("403 keeps the missing verb the API server names", () => {
    const mapped = kubernetesError(
      apiError(
        403,
        status(
          'pods is forbidden: User "system:serviceaccount:ci:berth" cannot create resource "pods" in API group "" in the namespace "ci"',
        ),
      ),
      "create pod berth-1 in namespace ci",
    );
    assert.equal(Status[mapped.code], "PERMISSION_DENIED");
    assert.match(mapped.message, /cannot create resource "pods".*namespace "ci"/);
  });

  test("no HTTP status (a socket error, a string code, a code below 100) is UNAVAILABLE", () => {
    for (const err of [
      Object.assign(new Error("connect ECONNREFUSED 10.0.0.1:6443"), { code: "ECONNREFUSED" }),
      Object.assign(new Error("odd"), { code: 0 }),
      new Error("socket hang up"),
    ]) {
      const mapped = kubernetesError(err, "list berth's pods in namespace ci");
      assert.equal(Status[mapped.code], "UNAVAILABLE", err.message);
      assert.equal(
        mapped.message,
        `list berth's pods in namespace ci: cannot reach the Kubernetes API: ${err.message}`,
      );
    }
  });

  test("a BerthError passes through as it is", () => {
    const original = new BerthError(Status.DEADLINE_EXCEEDED, "start took too long");
    assert.equal(kubernetesError(original, "watch pod berth-1"), original);
  });
});

describe("the API server's words", () => {
  test("from a Status object, its JSON text, plain text, or else the error's message", () => {
    assert.equal(apiMessage(apiError(404, status('pods "x" not found'))), 'pods "x" not found');
    assert.equal(
      apiMessage(apiError(409, JSON.stringify(status('pods "x" already exists')))),
      'pods "x" already exists',
    );
    assert.equal(apiMessage(apiError(502, "  Bad Gateway\n")), "Bad Gateway");
    assert.equal(apiMessage(apiError(500, "")), "HTTP-Code: 500 Message: Unknown API Status Code!");
    assert.equal(
      apiMessage(apiError(500, { message: 42 })),
      "HTTP-Code: 500 Message: Unknown API Status Code!",
    );
    assert.equal(apiMessage(apiError(500, undefined)), "HTTP-Code: 500 Message: Unknown API Status Code!");
  });

  test("statusCodeOf and isNotFound read the numeric code only", () => {
    assert.equal(statusCodeOf(apiError(404, {})), 404);
    assert.equal(statusCodeOf({ code: "404" }), undefined);
    assert.equal(statusCodeOf({ code: 99 }), undefined);
    assert.equal(statusCodeOf(undefined), undefined);
    assert.equal(isNotFound(apiError(404, {})), true);
    assert.equal(isNotFound(apiError(410, {})), false);
  });
});
