/**
 * Measuring berth's data paths with a benchmark client: each call's wall
 * time and the CPU it cost the server process and the client, summed up
 * per path as MB/s and CPU seconds per GiB.
 */
import type { BenchClient, CallCost } from "./clients.js";
import { cpuSeconds, median, mbPerS, round } from "./util.js";

const GiB = 1024 ** 3;

/** One measured call: the client's figures plus the server's CPU meanwhile. */
export interface Measured extends CallCost {
  serverCpuS: number;
}

/** Runs a client call and adds the CPU `serverPid` spent meanwhile. */
export async function measuredCall<T extends CallCost>(
  serverPid: number,
  call: () => Promise<T>,
): Promise<T & Measured> {
  const before = await cpuSeconds(serverPid);
  const result = await call();
  return { ...result, serverCpuS: (await cpuSeconds(serverPid)) - before };
}

/** MB/s of the median run, every run's seconds, and the CPU per run and per GiB of server and client. */
export function pathSummary(bytes: number, runs: Measured[]) {
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  const serverS = mean(runs.map((run) => run.serverCpuS));
  const clientS = mean(runs.map((run) => run.clientCpuS));
  return {
    mbPerS: round(mbPerS(bytes, median(runs.map((run) => run.seconds))), 1),
    seconds: runs.map((run) => round(run.seconds, 3)),
    cpuPerRun: { daemonS: round(serverS, 3), clientS: round(clientS, 3) },
    cpuPerGiB: { daemonS: round(serverS / (bytes / GiB), 2), clientS: round(clientS / (bytes / GiB), 2) },
  };
}

export type PathSummary = ReturnType<typeof pathSummary>;

/** `warmup` + `iterations` runs of `command` through berth, in blocks alternating with `direct` runs of the baseline. */
export async function interleavedLatency(
  client: BenchClient,
  target: { address: string; id: string },
  command: string[],
  direct: () => Promise<void>,
  { warmup, iterations, blocks }: { warmup: number; iterations: number; blocks: number },
): Promise<{ berth: number[]; direct: number[] }> {
  const berth: number[] = [];
  const directMs: number[] = [];
  for (let i = 0; i < warmup; i++) await direct();
  const perBlock = Math.ceil(iterations / blocks);
  for (let block = 0; block < blocks; block++) {
    const runs = { warmup: block === 0 ? warmup : 0, n: perBlock };
    berth.push(...(await client.latency(target.address, target.id, command, runs)).ms);
    for (let i = 0; i < perBlock; i++) {
      const started = performance.now();
      await direct();
      directMs.push(performance.now() - started);
    }
  }
  return { berth: berth.sort((a, b) => a - b), direct: directMs.sort((a, b) => a - b) };
}
