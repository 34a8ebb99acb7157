import { constants as osConstants } from "node:os";
import type { ExecResult } from "../../src/driver.js";

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
 * Prints the file that holds the OOM-kill counter (`oom_kill N`) of the
 * memory cgroup the container's processes are in, whatever the node's
 * layout: cgroup v2's memory.events or v1's memory.oom_control, with the
 * cgroup's own path from /proc/self/cgroup tried first (the whole
 * hierarchy is visible when the runtime shares the host's cgroup
 * namespace, as the kubelet's dockershim does on v2; the top file would
 * then be the root cgroup's), then the top of the mount (a private cgroup
 * namespace, or v1's per-container mount). `$1` is a directory standing
 * for / (empty in a container; a fixture tree in tests). Needs only sh
 * and cat; run only after an exit of 137, so it costs nothing otherwise.
 */
export const oomKillCounterScript = `r=$1 v1= v2=
while IFS=: read -r _ controllers path; do
  case ",$controllers," in
    ,,) v2=$path ;;
    *,memory,*) v1=$path ;;
  esac
done <"$r/proc/self/cgroup"
for f in "$r/sys/fs/cgroup$v2/memory.events" "$r/sys/fs/cgroup/memory.events" \
  "$r/sys/fs/cgroup/memory$v1/memory.oom_control" "$r/sys/fs/cgroup/memory/memory.oom_control"; do
  if [ -r "$f" ]; then exec cat "$f"; fi
done
exit 1`;

/** oomKillCounterScript as a command for the job container. */
export const oomKillCounterCommand = ["sh", "-c", oomKillCounterScript, "berth-oom-counter", ""];

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
   * oomKillCounterCommand, or undefined) tells whether the OOM killer did it,
   * and where it cannot be read, `containerOomKilled` (whether the container
   * itself was ended by the OOM killer), if given.
   */
  async exited(
    environmentId: string,
    exitCode: number,
    readCounter: () => Promise<string | undefined>,
    containerOomKilled?: () => Promise<boolean>,
  ): Promise<ExecResult> {
    if (exitCode !== sigkillExitCode) return exitedWith(exitCode);
    const count = Number(/^oom_kill (\d+)$/m.exec((await readCounter()) ?? "")?.[1] ?? Number.NaN);
    if (!Number.isFinite(count)) {
      // No counter: the OOM killer may have ended the container itself (its first process), so
      // there is nothing left to run the reader in. Whoever runs it may know (a pod's status).
      if (!(await containerOomKilled?.())) return exitedWith(exitCode);
      // A new container comes up in its place, with a new cgroup: its counter starts at zero.
      this.seen.delete(environmentId);
      return exitedWith(exitCode, true);
    }
    const before = this.seen.get(environmentId) ?? 0;
    this.seen.set(environmentId, count);
    return exitedWith(exitCode, count > before);
  }

  forget(environmentId: string): void {
    this.seen.delete(environmentId);
  }
}
