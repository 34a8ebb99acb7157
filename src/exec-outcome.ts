import { constants as osConstants } from "node:os";
import type { ExecResult } from "./driver.js";

const signalNames = new Map(Object.entries(osConstants.signals).map(([name, number]) => [number, name]));

/**
 * How a command that ran ended, with the reason named when its exit code
 * says it was killed: 128+n is how a signal's death reaches berth from a
 * container runtime, a shell or bubblewrap (a program can exit 137 itself,
 * but in CI that is what SIGKILL looks like).
 */
export function exitedWith(exitCode: number, oomKilled = false): ExecResult {
  const name = exitCode > 128 ? signalNames.get(exitCode - 128) : undefined;
  if (name === undefined) return { kind: "exited", exitCode };
  const code = `exit code ${exitCode} = 128+${exitCode - 128}`;
  const message = oomKilled
    ? `the command was killed by the kernel's out-of-memory killer (${name}, ${code}): the job container reached its memory limit`
    : `the command was killed by ${name} (${code})`;
  return { kind: "exited", exitCode, message };
}

/**
 * Prints the job container's cgroup OOM-kill counter (cgroup v2's
 * memory.events, then v1's memory.oom_control; whichever exists). Run in
 * the container only after an exit of 137, so it costs nothing otherwise;
 * images without cat just get no OOM verdict.
 */
export const oomKillCounterCommand = [
  "cat",
  "/sys/fs/cgroup/memory.events",
  "/sys/fs/cgroup/memory/memory.oom_control",
];

/** Exit code of a command killed by SIGKILL, which is what the OOM killer sends. */
const sigkillExitCode = 128 + osConstants.signals.SIGKILL;

/**
 * Counts OOM kills per environment from the counter's output, so an exit of
 * 137 is blamed on the OOM killer only when the count went up since the
 * last look. A container's cgroup starts at zero; after a restart berth
 * starts from zero too, so an OOM kill from before it may be blamed once.
 */
export class OomKillCounts {
  private readonly seen = new Map<string, number>();

  /**
   * How a command of this environment that exited with `exitCode` ended;
   * after an exit of 137, `readCounter` (the container's output of
   * oomKillCounterCommand, or undefined) tells whether the OOM killer did it.
   */
  async exited(
    environmentId: string,
    exitCode: number,
    readCounter: () => Promise<string | undefined>,
  ): Promise<ExecResult> {
    if (exitCode !== sigkillExitCode) return exitedWith(exitCode);
    const count = Number(/^oom_kill (\d+)$/m.exec((await readCounter()) ?? "")?.[1] ?? Number.NaN);
    if (!Number.isFinite(count)) return exitedWith(exitCode);
    const before = this.seen.get(environmentId) ?? 0;
    this.seen.set(environmentId, count);
    return exitedWith(exitCode, count > before);
  }

  forget(environmentId: string): void {
    this.seen.delete(environmentId);
  }
}
