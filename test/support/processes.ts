/**
 * For reads of /proc/PID/…: a process that exited while it was looked at
 * has nothing to say (""); any other error is a real one and is thrown.
 */
export function processGone(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT" || code === "ESRCH") return "";
  throw err;
}
