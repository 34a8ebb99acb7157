/** Assertions and helpers for tests that call berth as a runner does. */
import assert from "node:assert/strict";
import { Status } from "nice-grpc";

import type { ExecOptions, ExecOutcome, PluginClient, v1alphaClient } from "../../src/client.js";

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

/**
 * Starts an environment over plugin.v1alpha and cancels the call as soon as
 * a progress line matches `when`, as a runner does when the job is
 * cancelled mid-boot; returns the progress lines seen.
 */
export async function startCancelledAt(
  client: ReturnType<typeof v1alphaClient>,
  id: string,
  when: RegExp,
): Promise<string[]> {
  const cancel = new AbortController();
  const progress: string[] = [];
  await assert.rejects(async () => {
    for await (const message of client.raw.start({ environmentId: id }, { signal: cancel.signal })) {
      if (message.output?.$case !== "data") continue;
      progress.push(message.output.value.data.toString());
      if (when.test(progress.at(-1)!)) cancel.abort();
    }
  }, /abort/i);
  assert.ok(
    progress.some((line) => when.test(line)),
    `no progress line matched ${when}: ${progress.join("")}`,
  );
  return progress;
}

/**
 * In a started environment: `cut` drops berth's connection to the backend
 * while a command runs. The runner must get UNAVAILABLE matching `reason`
 * (not an exit code, not "could not run"), the command must not run on,
 * and the environment must still work afterwards.
 */
export async function assertCutExecFails(
  client: PluginClient,
  id: string,
  cut: () => void,
  reason: RegExp,
): Promise<void> {
  const mark = `30.${process.pid % 1000}`;
  await assert.rejects(
    client.exec(id, ["sh", "-c", `echo started; sleep ${mark}; echo finished`], {
      onOutput: (_s, data) => {
        if (data.toString().includes("started")) cut();
      },
    }),
    expectCode(Status.UNAVAILABLE, reason),
  );
  const count = ["sh", "-c", `ps -o args | grep -c '^sleep ${mark.replace(".", "[.]")}' || true`];
  let left = "";
  for (let i = 0; i < 50 && left !== "0"; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 100));
    left = (await execOutput(client, id, count)).stdout.trim();
  }
  assert.equal(left, "0", "the interrupted command was stopped");
  assert.equal((await client.exec(id, ["true"])).exitCode, 0, "the environment still works");
}

/** Fails with a clear message instead of hanging when a call does not answer in time. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
