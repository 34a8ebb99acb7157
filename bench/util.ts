/** Helpers shared by the host and Docker parts of the benchmark (bench/run.ts, bench/docker.ts). */
import { spawn } from "node:child_process";
import { readFile, readdir } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { performance } from "node:perf_hooks";
import type { Readable } from "node:stream";
import { pino } from "pino";
import { Directory } from "../plugins/host/directory.js";
import { packEntry } from "../plugins/host/pack.js";

export const MiB = 1024 * 1024;

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** MB/s with MB = 10^6 bytes. */
export function mbPerS(bytes: number, seconds: number): number {
  return bytes / 1e6 / seconds;
}

export const round = (value: number, digits = 2) => Number(value.toFixed(digits));
export const toMiB = (bytes: number) => round(bytes / MiB, 1);

export async function timed(fn: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await fn();
  return (performance.now() - started) / 1000;
}

/** p50, p99 and mean of latencies in ms, sorted ascending. */
export const latencySummary = (sorted: number[]) => ({
  p50Ms: round(percentile(sorted, 50), 3),
  p99Ms: round(percentile(sorted, 99), 3),
  meanMs: round(sorted.reduce((a, b) => a + b, 0) / sorted.length, 3),
});

/** MB/s of the median run, and every run's seconds. */
export const throughputSummary = (bytes: number, seconds: number[]) => ({
  mbPerS: round(mbPerS(bytes, median(seconds)), 1),
  seconds: seconds.map((s) => round(s, 3)),
});

/** Spawns a command directly; resolves when it has exited and its pipes are closed. Without onStdout, stdout is read and dropped; with `stdout: "ignore"` it goes to /dev/null. */
export function runDirect(
  command: string,
  args: string[],
  onStdout?: ((chunk: Buffer) => void) | "ignore",
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ["ignore", onStdout === "ignore" ? "ignore" : "pipe", "pipe"],
    });
    if (typeof onStdout === "function") child.stdout!.on("data", onStdout);
    else child.stdout?.resume();
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-2000)));
    child.once("error", reject);
    child.once("close", (code, signal) =>
      code === 0
        ? resolve()
        : reject(new Error(`${command} ${args.join(" ")} failed (${code ?? signal}): ${stderr}`)),
    );
  });
}

export const sync = () => runDirect("sync", []);

/** Peak RSS of this (the benchmark) process. */
export async function ownPeakRss(): Promise<number> {
  const status = await readFile("/proc/self/status", "utf8");
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

/** The fields of /proc/PID/stat after the command name (fields[0] is the state, field 3). */
async function statFields(pid: number | "self"): Promise<string[]> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** CPU seconds used so far by a process (utime + stime; USER_HZ is 100 on Linux). */
export async function cpuSeconds(pid: number): Promise<number> {
  const fields = await statFields(pid);
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** CPU seconds of this process's children that have exited and been waited for (cutime + cstime). */
export async function childrenCpuSeconds(): Promise<number> {
  const fields = await statFields("self");
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

/** Pids of the running processes whose name (comm) passes `matches`. */
export async function findProcesses(matches: (comm: string) => boolean): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (matches((await readFile(`/proc/${entry}/comm`, "utf8")).trim())) pids.push(Number(entry));
    } catch {
      // It exited while we looked.
    }
  }
  return pids;
}

/**
 * CPU seconds used so far by every running process whose name (comm) passes
 * `matches`, including their waited-for children (cutime + cstime), which is
 * where short-lived helpers such as `runc exec` show up.
 */
export async function cpuSecondsOfProcesses(matches: (comm: string) => boolean): Promise<number> {
  let total = 0;
  for (const pid of await findProcesses(matches)) {
    try {
      const fields = await statFields(pid);
      total += fields.slice(11, 15).reduce((sum, field) => sum + Number(field), 0) / 100;
    } catch {
      // It exited while we looked.
    }
  }
  return total;
}

/**
 * Times calls and adds up the CPU seconds they cost in each of `sources`
 * (each a function reading a CPU-seconds counter); `cpu()` gives the average
 * per call, under the sources' names.
 */
export function cpuMeter<K extends string>(sources: Record<K, () => Promise<number>>) {
  const names = Object.keys(sources) as K[];
  const spent = Object.fromEntries(names.map((name) => [name, 0])) as Record<K, number>;
  const read = async () => {
    const values = {} as Record<K, number>;
    for (const name of names) values[name] = await sources[name]();
    return values;
  };
  let runs = 0;
  return {
    async time(fn: () => Promise<void>): Promise<number> {
      const before = await read();
      const seconds = await timed(fn);
      const after = await read();
      for (const name of names) spent[name] += after[name] - before[name];
      runs++;
      return seconds;
    },
    /** Average CPU seconds per call. */
    cpu: () =>
      Object.fromEntries(names.map((name) => [name, round(spent[name] / runs, 3)])) as Record<K, number>,
  };
}

/** Times berth calls and adds up the CPU they cost in the daemon and in this (client) process. */
export const berthMeter = (daemonPid: number) =>
  cpuMeter({ daemonS: () => cpuSeconds(daemonPid), clientS: () => cpuSeconds(process.pid) });

/** Things to undo, last first: what the benchmark created, so that it is removed even when a step fails. */
const cleanups: (() => Promise<unknown>)[] = [];

export function defer(undo: () => Promise<unknown>): void {
  cleanups.push(undo);
}

/** How many cleanups are pending; pass it to cleanup() to undo only what was deferred after this point. */
export const cleanupMark = () => cleanups.length;

/** Runs the pending cleanups down to `mark` (all of them by default), last first; failures are reported, not thrown. */
export async function cleanup(mark = 0): Promise<void> {
  while (cleanups.length > mark) {
    await cleanups.pop()!().catch((err: unknown) => console.error("cleanup:", err));
  }
}

/** Formats rows as a table: the first column left-aligned, the others right-aligned; string rows are printed as they are (section titles). */
export function formatTable(header: string[], rows: (string[] | string)[]): string[] {
  const cells = [header, ...rows.filter((row): row is string[] => typeof row !== "string")];
  const widths = header.map((_, col) => Math.max(...cells.map((row) => row[col].length)));
  const line = (row: string[]) =>
    row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]) : cell.padStart(widths[col]))).join("   ");
  return [
    line(header),
    widths.map((w) => "-".repeat(w)).join("   "),
    ...rows.map((row) => (typeof row === "string" ? row : line(row))),
  ];
}

/** A tar stream of a directory on this machine, its entries under `entryName` (the host driver's packer). */
export async function packDirectory(path: string, entryName: string): Promise<Readable> {
  const parent = await Directory.open(dirname(path), dirname(path));
  return packEntry(parent, basename(path), entryName, pino({ level: "silent" }));
}
