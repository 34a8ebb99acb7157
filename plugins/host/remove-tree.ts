import { spawn } from "node:child_process";
import { failedPrecondition } from "../../src/errors.js";

/**
 * Deletes a directory tree with `rm -rf`, not fs.rm: Node's recursive rm
 * starts the removal of every entry of a directory at once, so a job that
 * leaves 300,000 directories behind costs berth hundreds of MiB at Remove;
 * rm walks the tree in bounded memory, in a process of its own, and never
 * follows a symlink. Only the options every rm has (berth's own image has
 * BusyBox's).
 */
export async function removeTree(path: string): Promise<void> {
  const child = spawn("rm", ["-rf", "--", path], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (text: string) => (stderr += text.slice(0, 4096)));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", resolve);
  });
  if (code !== 0) {
    const why = stderr.trim().split("\n").slice(0, 3).join("; ");
    throw failedPrecondition(`cannot delete ${path} (rm exited ${code}: ${why}); Remove can be tried again`);
  }
}
