/**
 * The clients the benchmark makes its measured calls with. By default the
 * grpc-go client (bench/go-client/), which dials as Forgejo Runner does, so
 * that what the client costs is what a runner pays; `--client node` uses
 * berth's own Node client instead (src/client.ts), which costs 3–10 s of
 * CPU per GiB on the cores the daemon shares. Either way, setting up and
 * checking (create, stat, rm) goes through the Node client and is not timed.
 */
import type { Channel } from "nice-grpc";
import { openChannel, v1alphaClient } from "../src/client.js";
import { buildGoClient, goCopyIn, goCopyOut, goExec, goLatency } from "./go-client.js";
import { packDirectory } from "./util.js";

/** A measured call: its wall time (the call itself, not the client's start or dial) and the client's CPU. */
export interface CallCost {
  seconds: number;
  clientCpuS: number;
}

export interface BenchClient {
  readonly name: string;
  /** Runs a command, counting its stdout; rejects unless it exits 0. */
  exec(address: string, id: string, command: string[]): Promise<CallCost & { stdoutBytes: number }>;
  /** `warmup` untimed, then `n` timed runs of a command that must exit 0: each run's ms, in order. */
  latency(
    address: string,
    id: string,
    command: string[],
    runs: { warmup: number; n: number },
  ): Promise<{ ms: number[]; clientCpuS: number }>;
  /** Sends directory `dir` into the environment as `dest`/`name`. */
  copyIn(address: string, id: string, copy: { dir: string; dest: string; name: string }): Promise<CallCost>;
  /** Reads `src` out of the environment as a tar, counting its bytes. */
  copyOut(address: string, id: string, src: string): Promise<CallCost & { tarBytes: number }>;
  close(): void;
}

/** The client asked for (`--client go|node`, go by default); go falls back to node, saying why, where it cannot be built. */
export async function chooseClient(asked: string | undefined): Promise<BenchClient> {
  if (asked !== undefined && asked !== "go" && asked !== "node")
    throw new Error(`--client ${asked}: the clients are go (grpc-go, the default) and node`);
  if (asked === "node") return nodeClient();
  console.error("building the grpc-go benchmark client (bench/go-client)");
  const built = await buildGoClient();
  if (typeof built !== "string") {
    console.error(
      `the grpc-go client cannot be built (${built.unavailable}): measuring with berth's Node client`,
    );
    return nodeClient(`go unavailable: ${built.unavailable}`);
  }
  return goClient(built);
}

function goClient(binary: string): BenchClient {
  return {
    name: "grpc-go (bench/go-client, dialing as Forgejo Runner does)",
    async exec(address, id, command) {
      const result = await goExec(binary, address, id, command);
      if (result.exitCode !== 0)
        throw new Error(`${command.join(" ")} through berth exited ${result.exitCode}`);
      return { seconds: result.seconds, clientCpuS: result.cpuSeconds, stdoutBytes: result.stdoutBytes };
    },
    async latency(address, id, command, runs) {
      const { ms, cpuSeconds } = await goLatency(binary, address, id, command, runs);
      return { ms, clientCpuS: cpuSeconds };
    },
    async copyIn(address, id, copy) {
      const { seconds, cpuSeconds } = await goCopyIn(binary, address, id, copy);
      return { seconds, clientCpuS: cpuSeconds };
    },
    async copyOut(address, id, src) {
      const { seconds, cpuSeconds, tarBytes } = await goCopyOut(binary, address, id, src);
      return { seconds, clientCpuS: cpuSeconds, tarBytes };
    },
    close: () => undefined,
  };
}

/** This process's CPU seconds (user + system). */
const ownCpu = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

/** Times `fn` and the CPU this process spent meanwhile. */
async function costOf<T>(fn: () => Promise<T>): Promise<CallCost & { value: T }> {
  const cpu = ownCpu();
  const started = performance.now();
  const value = await fn();
  return { value, seconds: (performance.now() - started) / 1000, clientCpuS: ownCpu() - cpu };
}

function nodeClient(why?: string): BenchClient {
  const channels = new Map<string, Channel>();
  const clientFor = (address: string) => {
    if (!channels.has(address)) channels.set(address, openChannel(address));
    return v1alphaClient(channels.get(address)!);
  };
  const run = async (address: string, id: string, command: string[]) => {
    let stdoutBytes = 0;
    const outcome = await clientFor(address).exec(id, command, {
      onOutput: (stream, data) => (stdoutBytes += stream === "stdout" ? data.length : 0),
    });
    if (outcome.exitCode !== 0)
      throw new Error(`${command.join(" ")} through berth: ${JSON.stringify(outcome)}`);
    return stdoutBytes;
  };
  return {
    name: `berth's Node client (src/client.ts)${why ? `; ${why}` : ""}`,
    async exec(address, id, command) {
      const { value, ...cost } = await costOf(() => run(address, id, command));
      return { ...cost, stdoutBytes: value };
    },
    async latency(address, id, command, { warmup, n }) {
      for (let i = 0; i < warmup; i++) await run(address, id, command);
      const ms: number[] = [];
      const cpu = ownCpu();
      for (let i = 0; i < n; i++) ms.push((await costOf(() => run(address, id, command))).seconds * 1000);
      return { ms, clientCpuS: ownCpu() - cpu };
    },
    async copyIn(address, id, { dir, dest, name }) {
      const { seconds, clientCpuS } = await costOf(async () =>
        clientFor(address).copyIn(id, dest, await packDirectory(dir, name)),
      );
      return { seconds, clientCpuS };
    },
    async copyOut(address, id, src) {
      const { value, ...cost } = await costOf(async () => {
        let tarBytes = 0;
        for await (const chunk of clientFor(address).copyOut(id, src)) tarBytes += chunk.length;
        return tarBytes;
      });
      return { ...cost, tarBytes: value };
    },
    close() {
      for (const channel of channels.values()) channel.close();
    },
  };
}
