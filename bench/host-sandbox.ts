/**
 * The host latency baseline: the very sandbox berth's host driver starts for
 * an Exec, started here directly. berth's bubblewrap arguments depend on the
 * machine (every top-level entry of / is bound) and on the environment (its
 * directories, its PID namespace), so they are read off a real one: a
 * command berth runs is found in /proc while it sleeps: its bwrap's
 * arguments are taken over, and its PID namespace is passed as berth passes
 * the environment's (fd 3).
 */
import { spawn } from "node:child_process";
import { type FileHandle, open, readFile, readdir } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";

export interface Sandbox {
  /** bwrap's arguments up to and including "--". */
  args: string[];
  /** The environment's PID namespace, passed as fd 3 as berth does (undefined when berth passes none). */
  pidNamespace?: FileHandle;
}

/** The running processes' command lines, by pid. */
async function commandLines(): Promise<Map<number, string[]>> {
  const lines = new Map<number, string[]>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = await readFile(`/proc/${entry}/cmdline`, "utf8").then(
      (text) => text.split("\0").slice(0, -1),
      () => [],
    );
    if (argv.length > 0) lines.set(Number(entry), argv);
  }
  return lines;
}

const same = (a: string[], b: string[]) => a.length === b.length && a.every((arg, i) => arg === b[i]);

/** berth's bwrap running `command`, and the command itself inside it, once both are there. */
async function findSandboxed(command: string[]): Promise<{ args: string[]; commandPid: number } | undefined> {
  const lines = [...(await commandLines())];
  const tail = ["--", ...command];
  const bwrap = lines.find(([, argv]) => argv[0] === "bwrap" && same(argv.slice(-tail.length), tail));
  const inside = lines.find(([, argv]) => same(argv, command));
  if (!bwrap || !inside) return undefined;
  return { args: bwrap[1].slice(1, -tail.length), commandPid: inside[0] };
}

/**
 * Runs `sleep` through berth with `runThroughBerth` and captures its sandbox
 * while it runs. The caller closes `pidNamespace`.
 */
export async function captureSandbox(
  runThroughBerth: (command: string[]) => Promise<void>,
): Promise<Sandbox> {
  const command = ["sleep", "2.25"];
  const running = runThroughBerth(command);
  try {
    for (let look = 0; look < 200; look++) {
      const found = await findSandboxed(command);
      if (found) {
        // berth passes the environment's PID namespace as fd 3: the command runs in it.
        const joins = found.args.includes("--pidns");
        const pidNamespace = joins ? await open(`/proc/${found.commandPid}/ns/pid`, "r") : undefined;
        return { args: [...found.args, "--"], pidNamespace };
      }
      await delay(10);
    }
    throw new Error(
      "no bwrap of berth's was found running `sleep 2.25`: is the host driver using isolation=bwrap?",
    );
  } finally {
    await running;
  }
}

/** Runs `command` in the captured sandbox; resolves when it has exited 0 and its pipes are closed. */
export function runInSandbox(sandbox: Sandbox, command: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const fds = sandbox.pidNamespace ? [sandbox.pidNamespace.fd] : [];
    const child = spawn("bwrap", [...sandbox.args, ...command], {
      stdio: ["ignore", "pipe", "pipe", ...fds],
    });
    child.stdout!.resume();
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-2000)));
    child.once("error", reject);
    child.once("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`bwrap … ${command.join(" ")} failed (${code}): ${stderr}`)),
    );
  });
}
