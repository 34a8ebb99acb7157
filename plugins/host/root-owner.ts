/**
 * Which berth uses an instance's directory under the host driver's root. Two
 * daemons with the same instance name and root would take each other's
 * environments for orphans and delete them, so the first one to start
 * writes its pid to `<root>/<instance>/owner` (created exclusively) and a
 * second one is refused while that pid is a live berth. A file left by a
 * berth that died is taken over. (After a reload that replaced the host
 * backend, the old backend's cleanup removes the file, and the daemon runs
 * on without it until its next start.)
 */
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { failedPrecondition, messageOf } from "../../src/errors.js";
import { errnoOf } from "./directory.js";

export class RootOwner {
  private readonly file: string;
  private owned = false;

  constructor(
    dir: string,
    private readonly instance: string,
  ) {
    this.file = join(dir, "owner");
  }

  async claim(): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await writeFile(this.file, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
        this.owned = true;
        return;
      } catch (err) {
        if (errnoOf(err) !== "EEXIST") {
          throw failedPrecondition(`driver host: provision: cannot write ${this.file}: ${messageOf(err)}`);
        }
      }
      const pid = Number.parseInt(await readFile(this.file, "utf8").catch(() => ""), 10);
      // This very daemon (a reload provisions the new backend before the old one is cleaned up).
      if (pid === process.pid) return;
      if (await isBerth(pid)) {
        throw failedPrecondition(
          `driver host: provision: another berth (pid ${pid}) uses ${this.file.slice(0, -"/owner".length)} as instance ${this.instance}; give this one another --instance or host root, or stop that one`,
        );
      }
      // Left by a berth that is gone: take it over.
      await rm(this.file, { force: true });
    }
    throw failedPrecondition(
      `driver host: provision: cannot take over ${this.file}: another berth keeps writing it`,
    );
  }

  async release(): Promise<void> {
    if (!this.owned) return;
    this.owned = false;
    await rm(this.file, { force: true });
  }
}

/** Whether pid is a live process that runs berth (a pid of a dead berth may have been reused). */
async function isBerth(pid: number): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const commandLine = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  return /berth|cli\.js/.test(commandLine);
}
