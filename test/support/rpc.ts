/** Assertions and helpers for tests that call berth as a runner does. */
import assert from "node:assert/strict";
import { Status } from "nice-grpc";
import type { ExecOptions, ExecOutcome, PluginClient } from "../../src/client.js";

/** For assert.rejects: the call failed with this gRPC code (and a message matching the pattern). */
export function expectCode(code: Status, pattern?: RegExp) {
  return (err: { code?: Status; details?: string }) => {
    assert.equal(err.code, code, `expected ${Status[code]}, got ${err.code} ${err.details}`);
    if (pattern) assert.match(err.details ?? "", pattern);
    return true;
  };
}

/** Runs a command and returns its outcome with its whole stdout. */
export async function execStdout(
  client: PluginClient,
  id: string,
  command: string[],
  options: Omit<ExecOptions, "onOutput"> = {},
): Promise<ExecOutcome & { stdout: string }> {
  let stdout = "";
  const outcome = await client.exec(id, command, {
    ...options,
    onOutput: (stream, data) => {
      if (stream === "stdout") stdout += data.toString();
    },
  });
  return { stdout, ...outcome };
}
