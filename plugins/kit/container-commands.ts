/**
 * What the container drivers do with commands of berth's own inside a job
 * container: signal a cancelled command's processes, read the OOM-kill
 * counter. Each driver supplies one primitive, running a command there.
 */
import type { Writable } from "node:stream";
import type { Logger } from "pino";
import { messageOf } from "../../src/errors.js";
import { killMarkedScript } from "./exec-marker.js";
import { oomKillCounterCommand } from "./exec-outcome.js";
import type { StopSignal } from "./kill-escalation.js";
import { CollectingWritable } from "./output-capture.js";

/**
 * Runs one of berth's own commands in the job container (as root where the
 * backend lets berth choose) and resolves with its exit code; rejects with a
 * BerthError when it could not be run at all.
 */
export type RunInJobContainer = (
  argv: string[],
  output: { stdout?: Writable; stderr?: Writable },
  signal: AbortSignal,
) => Promise<number>;

/** How long one of these commands may take before berth gives up on it. */
const helperTimeoutMs = 30_000;

/** Sends `signal` to every process carrying the Exec's marker; a failure is logged, as nobody waits for it. */
export async function signalMarked(
  run: RunInJobContainer,
  signal: StopSignal,
  marker: string,
  logger: Logger,
): Promise<void> {
  const errors = new CollectingWritable(8192);
  try {
    const exitCode = await run(
      ["sh", "-c", killMarkedScript, "sh", signal, marker],
      { stderr: errors },
      AbortSignal.timeout(helperTimeoutMs),
    );
    // 126/127: sh could not run a tool; a kill of a process that just exited is not a failure.
    if (exitCode >= 126) throw new Error(errors.text().trim() || `exit code ${exitCode}`);
  } catch (err) {
    logger.warn(
      { err: messageOf(err), signal },
      "could not signal a cancelled command (the image needs sh, tr and grep)",
    );
  }
}

/** The job container's OOM-kill counter (oomKillCounterCommand's output), or undefined if the image cannot print it. */
export async function readOomKillCounter(
  run: RunInJobContainer,
  logger: Logger,
): Promise<string | undefined> {
  const output = new CollectingWritable(4096);
  try {
    await run(oomKillCounterCommand, { stdout: output }, AbortSignal.timeout(helperTimeoutMs));
    return output.text();
  } catch (err) {
    logger.debug({ err: messageOf(err) }, "could not read the job container's OOM-kill counter");
    return undefined;
  }
}
