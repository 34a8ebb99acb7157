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

/** Runs a command and returns its outcome with its whole stdout and stderr. */
export async function execOutput(
  client: PluginClient,
  id: string,
  command: string[],
  options: Omit<ExecOptions, "onOutput"> = {},
): Promise<ExecOutcome & { stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const outcome = await client.exec(id, command, {
    ...options,
    onOutput: (stream, data) => {
      if (stream === "stdout") stdout += data.toString();
      else stderr += data.toString();
    },
  });
  return { stdout, stderr, ...outcome };
}

/**
 * In a started environment whose job container has a memory limit well
 * under 200 MB: a command that fills memory past it is named as the OOM
 * killer's (on v1alpha's stderr), and a later plain SIGKILL is not (in v1's
 * error_message), though both exit 137.
 */
export async function assertOomKillNamed(v1alpha: PluginClient, v1: PluginClient, id: string): Promise<void> {
  const hog = await execOutput(v1alpha, id, [
    "sh",
    "-c",
    'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo ${#x}',
  ]);
  assert.equal(hog.exitCode, 137);
  assert.match(hog.stderr, /killed by the kernel's out-of-memory killer \(SIGKILL, exit code 137 = 128\+9\)/);
  const killed = await v1.exec(id, ["sh", "-c", "kill -KILL $$"]);
  assert.equal(killed.exitCode, 137);
  assert.equal(killed.errorMessage, "the command was killed by SIGKILL (exit code 137 = 128+9)");
}
