/**
 * The host part of the benchmark: berth's host driver (bubblewrap) against
 * the same work done directly on this machine. See bench/README.md.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "nice-grpc";
import { HealthDefinition } from "nice-grpc-server-health";
import { HealthCheckResponse_ServingStatus } from "nice-grpc-server-health/lib/proto/grpc/health/v1/health.js";
import { openChannel, v1alphaClient } from "../src/client.js";
import { startDaemon } from "../test/support/daemon-process.js";
import type { BenchClient } from "./clients.js";
import { captureSandbox, runInSandbox } from "./host-sandbox.js";
import { type Measured, interleavedLatency, measuredCall, pathSummary } from "./paths.js";
import { defer, latencySummary, round, runDirect, sync, throughputSummary, timed, toMiB } from "./util.js";

/**
 * `--log-level warn` is what we want (later flags win over startDaemon's
 * `--log-level debug`), but startDaemon waits for the info-level "berth serving
 * on" line, which warn suppresses, so it would never return. `info` drops the
 * per-RPC debug lines just as warn does; what remains is a handful of lines
 * per environment, none per call.
 */
export const hostDaemonArgs = [
  "--backend",
  "host",
  "--backend-opt",
  "isolation=bwrap",
  "--log-level",
  "info",
];
const latency = { warmup: 20, iterations: 200, blocks: 4 };
/** How long the daemon is left alone before its idle memory is read. */
const idleMs = 2_000;

/** The baseline for both copy directions: GNU tar packing into GNU tar extracting, through a pipe. */
const tarPipe = (src: string, dst: string) =>
  runDirect("bash", ["-c", 'set -o pipefail; tar -C "$1" -cf - . | tar -C "$2" -xf -', "bash", src, dst]);

export interface HostInput {
  client: BenchClient;
  tmp: string;
  srcDir: string;
  tree: { bytes: number; files: number };
  bigBytes: number;
  throughputRuns: number;
}

/** Starts the daemon and times it from the spawn to its health check answering SERVING. */
async function startTimed() {
  const started = performance.now();
  const daemon = await startDaemon(hostDaemonArgs);
  const channel = openChannel(daemon.address);
  const health = createClient(HealthDefinition, channel);
  while ((await health.check({ service: "" })).status !== HealthCheckResponse_ServingStatus.SERVING);
  const startupMs = performance.now() - started;
  return { daemon, channel, startupMs };
}

export async function measureHost(input: HostInput) {
  const { client, tree, bigBytes, throughputRuns } = input;
  const { daemon, channel, startupMs } = await startTimed();
  const teardown = { daemonExit: undefined as number | null | undefined };
  defer(async () => {
    teardown.daemonExit = await daemon.stop();
  });
  defer(() => Promise.resolve(channel.close()));
  await new Promise((resolve) => setTimeout(resolve, idleMs));
  const idle = await daemon.memory();
  const control = v1alphaClient(channel);
  const { id, layout } = await control.create({});
  defer(() => control.remove(id));
  await control.start(id);
  const env = { address: daemon.address, id, root: layout!.rootPath, pid: daemon.child.pid! };
  const exec = async (command: string[]) => {
    let out = "";
    const outcome = await control.exec(id, command, { onOutput: (_, data) => (out += data.toString()) });
    if (outcome.exitCode !== 0)
      throw new Error(`${command.join(" ")} through berth: ${JSON.stringify(outcome)}`);
    return out;
  };
  const copies = await measureCopies(input, env, exec, daemon.memory);
  const latencyMs = await measureLatency(client, env, exec);

  console.error(`exec output: ${throughputRuns} runs each of head -c ${bigBytes} /dev/zero`);
  const headArgs = ["-c", String(bigBytes), "/dev/zero"];
  const berthOutput: Measured[] = [];
  const directOutput: number[] = [];
  for (let run = 0; run < throughputRuns; run++) {
    const call = await measuredCall(env.pid, () => client.exec(env.address, id, ["head", ...headArgs]));
    if (call.stdoutBytes !== bigBytes)
      throw new Error(`berth delivered ${call.stdoutBytes} bytes, not ${bigBytes}`);
    berthOutput.push(call);
    let received = 0;
    directOutput.push(await timed(() => runDirect("head", headArgs, (chunk) => (received += chunk.length))));
    if (received !== bigBytes) throw new Error(`head delivered ${received} bytes, not ${bigBytes}`);
  }
  return {
    teardown,
    startupToServingMs: round(startupMs, 1),
    idleRssMiB: toMiB(idle.current),
    execLatency: { command: ["true"], ...latency, ...latencyMs },
    execThroughput: {
      command: ["head", ...headArgs],
      bytes: bigBytes,
      berth: pathSummary(bigBytes, berthOutput),
      direct: throughputSummary(bigBytes, directOutput),
    },
    copy: { treeBytes: tree.bytes, files: tree.files, ...copies.results },
    daemonMemory: copies.memory,
  };
}

type Environment = { address: string; id: string; root: string; pid: number };

/** Copy-in and copy-out of the tree through berth, each run against the tar pipe; and the daemon's memory meanwhile. */
async function measureCopies(
  { client, tmp, srcDir, tree, bigBytes, throughputRuns }: HostInput,
  env: Environment,
  exec: (command: string[]) => Promise<string>,
  memory: () => Promise<{ peak: number; current: number }>,
) {
  console.error(`copy-in / copy-out: ${throughputRuns} runs each of berth and the tar pipe`);
  // Resets VmHWM to the current RSS, so the peak is the copies'.
  const peakReset = await writeFile(`/proc/${env.pid}/clear_refs`, "5").then(
    () => true,
    () => false,
  );
  const before = await memory();
  const copyIn: Measured[] = [];
  const copyOut: Measured[] = [];
  const pipe: number[] = [];
  let copyOutTarBytes = 0;
  for (let run = 0; run < throughputRuns; run++) {
    const dst = join(tmp, `dst${run}`);
    await mkdir(dst);
    await sync();
    pipe.push(await timed(() => tarPipe(srcDir, dst)));
    await rm(dst, { recursive: true, force: true });

    const dest = `${env.root}/in${run}`;
    await sync();
    copyIn.push(
      await measuredCall(env.pid, () =>
        client.copyIn(env.address, env.id, { dir: srcDir, dest, name: "tree" }),
      ),
    );
    const size = (await exec(["stat", "-c", "%s", `${dest}/tree/big.bin`])).trim();
    if (Number(size) !== bigBytes)
      throw new Error(`copy-in left big.bin with ${size} bytes, not ${bigBytes}`);

    await sync();
    const out = await measuredCall(env.pid, () => client.copyOut(env.address, env.id, `${dest}/tree`));
    if (out.tarBytes < tree.bytes)
      throw new Error(`copy-out sent ${out.tarBytes} bytes, less than the tree's ${tree.bytes}`);
    copyOut.push(out);
    copyOutTarBytes = out.tarBytes;
    await exec(["rm", "-rf", dest]);
  }
  const after = await memory();
  return {
    results: {
      copyOutTarBytes,
      runs: throughputRuns,
      copyIn: pathSummary(tree.bytes, copyIn),
      copyOut: pathSummary(tree.bytes, copyOut),
      tarPipe: throughputSummary(tree.bytes, pipe),
    },
    memory: {
      peakReset,
      baselineRssMiB: toMiB(before.current),
      peakRssMiB: toMiB(after.peak),
      growthMiB: toMiB(after.peak - before.current),
    },
  };
}

/** Exec of `true` through berth against the same bubblewrap sandbox spawned directly. */
async function measureLatency(
  client: BenchClient,
  env: Environment,
  exec: (command: string[]) => Promise<string>,
) {
  console.error(
    `exec latency: ${latency.warmup} warm-up + ${latency.iterations} iterations each, in ${latency.blocks} alternating blocks`,
  );
  const sandbox = await captureSandbox(async (command) => void (await exec(command)));
  try {
    const { berth, direct } = await interleavedLatency(
      client,
      env,
      ["true"],
      () => runInSandbox(sandbox, ["true"]),
      latency,
    );
    return {
      baseline: `bwrap ${sandbox.args.length} args (berth's own for this environment) -- true, spawned from Node`,
      berth: latencySummary(berth),
      direct: latencySummary(direct),
    };
  } finally {
    await sandbox.pidNamespace?.close();
  }
}

export type HostReport = Awaited<ReturnType<typeof measureHost>>;
