import { spawn } from "node:child_process";
import { type FileHandle, open, readdir, readFile, readlink } from "node:fs/promises";

/** Set in a holder's environment (and only there): which environment's PID namespace it holds. */
const holderMarker = "BERTH_PID_NAMESPACE";

/** The holder's sandbox needs nothing but a `sleep` to run: these, where the host has them. */
const holderPaths = ["/usr", "/bin", "/lib", "/lib32", "/lib64", "/sbin"];

/**
 * One PID namespace per environment, so that its commands see (and can
 * signal) only their own processes, while what one step leaves running in
 * the background is still there for the next, as in a container.
 *
 * A namespace lives as long as its first process: a holder, `sleep infinity`
 * as PID 1 under bubblewrap (--as-pid-1, so the kernel ignores the signals
 * the environment's own processes send it, and an orphan that exits stays a
 * zombie until Remove, as in a container started without --init). It is not
 * tied to berth (environments outlive a berth restart, to be adopted), so a
 * restarted berth finds it again by its marker; it carries the environment
 * marker too, so Remove's sweep of the environment's processes ends it and
 * with it everything left in the namespace.
 */
export class PidNamespaces {
  /** Host PID of each environment's holder, once started or found. */
  private readonly holders = new Map<string, Promise<number>>();

  constructor(private readonly environmentMarker: string) {}

  /** An open handle on the environment's PID namespace (for bubblewrap's --pidns), its holder started when there is none. */
  async enter(id: string): Promise<FileHandle> {
    for (let attempt = 1; ; attempt++) {
      let holder = this.holders.get(id);
      if (holder === undefined) {
        // Set before any await: concurrent calls share one start.
        holder = this.findOrStart(id);
        this.holders.set(id, holder);
      }
      const pid = await holder.catch(() => 0);
      const handle = await openIfHolder(pid, id);
      if (handle) return handle;
      if (this.holders.get(id) === holder) this.holders.delete(id);
      // A failed start says why; a holder gone (ended from outside the environment) is started anew, once.
      if (pid === 0) await holder;
      if (attempt === 2)
        throw new Error(`the holder of the environment's PID namespace (pid ${pid}) ended at once`);
    }
  }

  /** Forgets the environment's holder (its end is Remove's sweep). */
  forget(id: string): void {
    this.holders.delete(id);
  }

  private async findOrStart(id: string): Promise<number> {
    const own = await readlink("/proc/self/ns/pid");
    for (const name of await readdir("/proc")) {
      if (!/^\d+$/.test(name)) continue;
      const pid = Number(name);
      if ((await isHolder(pid, id)) && (await readlink(`/proc/${pid}/ns/pid`).catch(() => own)) !== own) {
        return pid;
      }
    }
    return startHolder({ [this.environmentMarker]: id, [holderMarker]: id });
  }
}

async function isHolder(pid: number, id: string): Promise<boolean> {
  const environ = await readFile(`/proc/${pid}/environ`, "utf8").catch(() => "");
  return environ.split("\0").includes(`${holderMarker}=${id}`);
}

/** The namespace of pid, if pid is still the environment's holder (checked after opening, against reuse of the pid). */
async function openIfHolder(pid: number, id: string): Promise<FileHandle | undefined> {
  if (pid <= 0) return undefined;
  const handle = await open(`/proc/${pid}/ns/pid`, "r").catch(() => undefined);
  if (handle && (await isHolder(pid, id))) return handle;
  await handle?.close();
  return undefined;
}

/** Starts a holder and answers its host PID (bubblewrap's "child-pid"), or why it could not start. */
async function startHolder(markers: Record<string, string>): Promise<number> {
  const args = ["--unshare-pid", "--as-pid-1", "--cap-drop", "ALL", "--info-fd", "3"];
  for (const path of holderPaths) {
    const target = await readlink(path).catch((err: NodeJS.ErrnoException) => err.code);
    if (target === "ENOENT") continue;
    if (target === "EINVAL") args.push("--ro-bind", path, path);
    else if (target !== undefined) args.push("--symlink", target, path);
  }
  const child = spawn("bwrap", [...args, "--", "sleep", "infinity"], {
    env: { PATH: "/usr/bin:/bin", ...markers },
    detached: true,
    stdio: ["ignore", "ignore", "pipe", "pipe"],
  });
  const info = child.stdio[3]!;
  let stderr = "";
  let written = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  info.on("data", (chunk: Buffer) => (written += chunk.toString()));
  try {
    const pid = await new Promise<number>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`bwrap exited ${code}: ${stderr.trim()}`)));
      info.once("end", () => {
        const childPid = /"child-pid":\s*(\d+)/.exec(written)?.[1];
        if (childPid) resolve(Number(childPid));
        else reject(new Error(`bwrap wrote no child-pid: ${stderr.trim() || written}`));
      });
    });
    return pid;
  } catch (err) {
    throw new Error(`cannot start the environment's PID namespace: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    child.stderr!.destroy();
    info.destroy();
    child.unref();
  }
}
