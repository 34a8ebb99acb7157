import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** How long a daemon may take to exit after SIGTERM (its grace period is 10 s). */
const exitDeadlineMs = 30_000;

/** The compiled CLI, run exactly as a user runs it. */
export const cliPath = fileURLToPath(new URL("../../src/cli.js", import.meta.url));

export interface DaemonProcess {
  child: ChildProcess;
  /** Address of the first listener. */
  address: string;
  /** Scratch directory of this daemon (its socket lives here); removed by stop(). */
  dir: string;
  /** Everything the daemon logged so far (JSON lines). */
  log: () => string;
  /** Peak and current resident memory of the daemon process, in bytes. */
  memory: () => Promise<{ peak: number; current: number }>;
  /** SIGTERM, wait for exit; returns the exit code. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/** A process's resident memory now (VmRSS) and its peak (VmHWM), in bytes. */
export async function processMemory(pid: number): Promise<{ peak: number; current: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  return { peak: kib("VmHWM"), current: kib("VmRSS") };
}

/**
 * Starts `berth serve` as a child process on a fresh unix socket and waits
 * until it logs that it serves. Extra args go after `serve`.
 */
export async function startDaemon(
  args: string[] = [],
  options: { listen?: string[]; env?: Record<string, string> } = {},
): Promise<DaemonProcess> {
  const dir = await mkdtemp(join(tmpdir(), "berth-test-"));
  const listen = options.listen ?? [`unix://${join(dir, "berth.sock")}`];
  // Its own records and its own instance name: test daemons never adopt or reap each other's environments.
  const own = [
    ...(args.includes("--state-dir") ? [] : ["--state-dir", join(dir, "state")]),
    ...(args.includes("--instance") ? [] : ["--instance", `test-${randomUUID().slice(0, 8)}`]),
  ];
  const child = spawn(
    process.execPath,
    [cliPath, "serve", "--log-level", "debug", ...own, ...listen.flatMap((l) => ["--listen", l]), ...args],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, BERTH_TEST_RUN: randomUUID(), ...options.env },
    },
  );
  let logText = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const ready = new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stderr });
    lines.on("line", (line) => {
      logText += `${line}\n`;
      const match = /"addresses":\["([^"]+)"/.exec(line);
      if (match) resolve(match[1]);
    });
    void exited.then((code) =>
      reject(new Error(`berth serve exited with ${code} before serving:\n${logText}`)),
    );
  });
  child.stdout.resume();
  const address = await ready;
  return {
    child,
    address,
    dir,
    log: () => logText,
    memory: () => processMemory(child.pid!),
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      // A daemon that lingers after its shutdown has something left open: fail loudly rather than hang.
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([
        exited,
        new Promise<"lingered">((resolve) => (timer = setTimeout(() => resolve("lingered"), exitDeadlineMs))),
      ]);
      clearTimeout(timer);
      await rm(dir, { recursive: true, force: true });
      if (code === "lingered") {
        child.kill("SIGKILL");
        throw new Error(
          `berth serve did not exit within ${exitDeadlineMs / 1000} s of ${signal}:\n${logText}`,
        );
      }
      return code;
    },
  };
}

/** Runs `berth serve` expecting it to fail at startup; returns its exit code and stderr. */
export async function startDaemonExpectingFailure(
  args: string[],
): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [cliPath, "serve", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  return { code, stderr };
}
