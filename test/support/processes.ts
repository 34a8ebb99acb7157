import { readdir, readFile } from "node:fs/promises";

/**
 * For reads of /proc/PID/…: a process that exited while it was looked at
 * has nothing to say (""); any other error is a real one and is thrown.
 */
export function processGone(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT" || code === "ESRCH") return "";
  throw err;
}

/** How many processes of this machine (berth's view, every PID namespace) have exactly this argv. */
export async function countProcesses(argv: string[]): Promise<number> {
  const wanted = `${argv.join("\0")}\0`;
  let count = 0;
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    if ((await readFile(`/proc/${name}/cmdline`, "utf8").catch(processGone)) === wanted) count++;
  }
  return count;
}
