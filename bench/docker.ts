/**
 * The Docker part of the benchmark: berth's Docker driver (`berth serve
 * --backend docker`) against the same work done directly on the same engine,
 * with dockerode and the docker CLI. See bench/README.md.
 */
import { writeFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import type { Readable } from "node:stream";
import Docker from "dockerode";
import { openChannel, v1alphaClient } from "../src/client.js";
import type { BenchClient } from "./clients.js";
import { type Measured, interleavedLatency, measuredCall, pathSummary } from "./paths.js";
import { startDaemon } from "../test/support/daemon-process.js";
import { dockerCli, ensureTestImages, testImages } from "../test/support/docker-images.js";
import {
  childrenCpuSeconds,
  cleanup,
  cleanupMark,
  cpuMeter,
  cpuSeconds,
  cpuSecondsOfProcesses,
  defer,
  findProcesses,
  latencySummary,
  ownPeakRss,
  round,
  runDirect,
  sync,
  throughputSummary,
  toMiB,
} from "./util.js";

/** As for the host part: `info` rather than `warn`, or startDaemon would never see the "serving" line. */
export const dockerDaemonArgs = ["--backend", "docker", "--log-level", "info"];
const image = testImages.busybox;
/** On every container the benchmark creates itself (berth labels its own). */
const benchLabel = "berth.bench";
const latency = { warmup: 10, iterations: 100, blocks: 4 };
/** Where `docker cp` puts the tree in the baseline container. */
const baselineDir = "/bench-in";

/** The engine's own processes: dockerd, containerd and the per-container shims (which reap `runc exec`). */
const isEngineProcess = (comm: string) => comm === "dockerd" || comm.startsWith("containerd");

/** Why the Docker part cannot run here, or undefined when it can. */
export async function dockerUnavailable(): Promise<string | undefined> {
  const where = process.env.DOCKER_HOST ?? "unix:///var/run/docker.sock";
  try {
    await new Docker({ timeout: 5_000 }).ping();
  } catch (err) {
    return `no Docker engine answers at ${where}: ${err instanceof Error ? err.message : String(err)}`;
  }
  try {
    await dockerCli(["version", "--format", "{{.Client.Version}}"], { timeoutMs: 30_000 });
  } catch (err) {
    return `the docker CLI (the \`docker cp\` baseline) does not work: ${err instanceof Error ? err.message : String(err)}`;
  }
  return undefined;
}

/**
 * Splits the engine's multiplexed exec stream (8-byte headers: stream type,
 * then payload length) without copying payloads: stdout goes to onStdout,
 * the last 2000 characters of stderr are returned.
 */
async function demux(stream: Readable, onStdout?: (data: Buffer) => void): Promise<{ stderr: string }> {
  const header = Buffer.alloc(8);
  let headerBytes = 0;
  let remaining = 0;
  let kind = 1;
  let stderr = "";
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let at = 0;
    while (at < chunk.length) {
      if (remaining === 0) {
        const n = Math.min(8 - headerBytes, chunk.length - at);
        chunk.copy(header, headerBytes, at, at + n);
        headerBytes += n;
        at += n;
        if (headerBytes === 8) {
          kind = header[0];
          remaining = header.readUInt32BE(4);
          headerBytes = 0;
        }
        continue;
      }
      const n = Math.min(remaining, chunk.length - at);
      const payload = chunk.subarray(at, at + n);
      if (kind === 2) stderr = (stderr + payload.toString()).slice(-2000);
      else onStdout?.(payload);
      remaining -= n;
      at += n;
    }
  }
  if (remaining > 0 || headerBytes > 0) throw new Error("the exec stream ended inside a frame");
  return { stderr };
}

/**
 * The baseline for Exec: what berth's driver does for a command, done here
 * with dockerode: create the exec, start it hijacked, read the stream to its
 * end, inspect for the exit code.
 */
async function directExec(
  container: Docker.Container,
  command: string[],
  onStdout?: (data: Buffer) => void,
): Promise<void> {
  const exec = await container.exec({ Cmd: command, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: false });
  let stderr: string;
  try {
    ({ stderr } = await demux(stream, onStdout));
  } finally {
    stream.destroy();
  }
  const { ExitCode: exitCode } = await exec.inspect();
  if (exitCode !== 0)
    throw new Error(`${command.join(" ")} through dockerode: exit code ${exitCode}: ${stderr}`);
}

export interface DockerInput {
  client: BenchClient;
  /** The tree the host part made (one big file and many small ones). */
  srcDir: string;
  tree: { bytes: number; files: number };
  bigBytes: number;
  throughputRuns: number;
}

/**
 * Measures the Docker driver; everything it creates (berth's environment,
 * the daemon, the baseline container) is removed before it returns or throws.
 */
export async function measureDocker(input: DockerInput) {
  const started = performance.now();
  const mark = cleanupMark();
  const teardown = { daemonExit: undefined as number | null | undefined };
  let measured: Awaited<ReturnType<typeof measure>>;
  try {
    measured = await measure(input, teardown);
  } finally {
    await cleanup(mark);
  }
  return {
    skipped: false as const,
    ...measured,
    daemonExitCode: teardown.daemonExit ?? null,
    durationS: round((performance.now() - started) / 1000, 1),
  };
}

export type DockerReport =
  | Awaited<ReturnType<typeof measureDocker>>
  | { skipped: true; reason: string }
  | { skipped: false; error: string };

/** What the measurements share: berth's environment, the baseline container, and how the engine's CPU is read. */
interface Setup {
  env: { address: string; id: string; root: string; pid: number };
  container: Docker.Container;
  /** Runs a command through berth (Node client, not timed) and returns its stdout. */
  berthExec: (command: string[]) => Promise<string>;
  engineCpu: () => Promise<number>;
  /** The daemon's RSS now and its peak. */
  memory: () => Promise<{ peak: number; current: number }>;
  engineOnly: <T extends { engineS: number }>(cpu: T) => T | (Omit<T, "engineS"> & { engineS: null });
}

async function measure(input: DockerInput, teardown: { daemonExit: number | null | undefined }) {
  // The host part's peak is in results.benchProcessPeakRssMiB; this part reports its own.
  await writeFile("/proc/self/clear_refs", "5").catch(() => undefined);
  console.error(`docker: building the test images if needed (${image})`);
  await ensureTestImages();
  const docker = new Docker();
  const version = await docker.version();
  const info = (await docker.info()) as { Driver?: string; CgroupVersion?: string };
  const engineLocal = (await findProcesses((comm) => comm === "dockerd")).length > 0;
  const setup = await prepare(docker, engineLocal, teardown);
  const copies = await measureCopies(input, setup);
  const latency = await measureLatency(input.client, setup);
  const output = await measureOutput(input, setup);
  const results = {
    engine: {
      version: version.Version,
      apiVersion: version.ApiVersion,
      storageDriver: info.Driver,
      cgroupVersion: info.CgroupVersion,
      /** Whether dockerd runs on this machine, so that its CPU (engineS) could be counted. */
      local: engineLocal,
    },
    config: {
      image,
      daemonArgs: dockerDaemonArgs,
      baselineContainer: {
        entrypoint: ["tail", "-f", "/dev/null"],
        init: true,
        network: "none",
        labels: { [benchLabel]: "1" },
      },
    },
    execLatency: latency,
    execThroughput: output,
    copy: { treeBytes: input.tree.bytes, files: input.tree.files, ...copies.results },
    daemonMemory: copies.memory,
    benchProcessPeakRssMiB: toMiB(await ownPeakRss()),
  };
  const ratios = {
    execLatencyP50: round(results.execLatency.berth.p50Ms / results.execLatency.direct.p50Ms),
    execLatencyP99: round(results.execLatency.berth.p99Ms / results.execLatency.direct.p99Ms),
    execThroughput: round(results.execThroughput.berth.mbPerS / results.execThroughput.direct.mbPerS),
    copyIn: round(results.copy.copyIn.mbPerS / results.copy.dockerCpIn.mbPerS),
    copyOut: round(results.copy.copyOut.mbPerS / results.copy.dockerCpOut.mbPerS),
  };
  return { ...results, ratios };
}

/** Starts berth's daemon and environment and the baseline container, each undone by cleanup. */
async function prepare(
  docker: Docker,
  engineLocal: boolean,
  teardown: { daemonExit: number | null | undefined },
): Promise<Setup> {
  const daemon = await startDaemon(dockerDaemonArgs);
  defer(async () => {
    teardown.daemonExit = await daemon.stop();
  });
  const channel = openChannel(daemon.address);
  defer(() => Promise.resolve(channel.close()));
  const control = v1alphaClient(channel);
  const { id, layout } = await control.create({ image });
  defer(() => control.remove(id));
  await control.start(id);

  const container = await docker.createContainer({
    name: `berth-bench-${process.pid}`,
    Image: image,
    Entrypoint: ["tail", "-f", "/dev/null"],
    Cmd: [],
    Labels: { [benchLabel]: "1" },
    // Init as berth's job container has it (the driver's default init=true); no network, which
    // neither exec nor copies use (berth's container is on its own bridge network; the default
    // bridge may not even exist).
    HostConfig: { Init: true, NetworkMode: "none" },
  });
  defer(() => container.remove({ force: true, v: true }));
  await container.start();
  const berthExec = async (command: string[]) => {
    let out = "";
    const outcome = await control.exec(id, command, {
      onOutput: (stream, data) => (out += stream === "stdout" ? data.toString() : ""),
    });
    if (outcome.exitCode !== 0)
      throw new Error(`${command.join(" ")} through berth: ${JSON.stringify(outcome)}`);
    return out;
  };
  return {
    env: { address: daemon.address, id, root: layout!.rootPath, pid: daemon.child.pid! },
    container,
    berthExec,
    memory: () => daemon.memory(),
    /** Engine CPU only counts when the engine runs on this machine. */
    engineCpu: engineLocal ? () => cpuSecondsOfProcesses(isEngineProcess) : () => Promise.resolve(0),
    engineOnly: (cpu) => (engineLocal ? cpu : { ...cpu, engineS: null }),
  };
}

/** A call through berth with the engine's CPU meanwhile added. */
async function withEngine<T>(setup: Setup, call: () => Promise<T>): Promise<T & { engineS: number }> {
  const before = await setup.engineCpu();
  const result = await call();
  return { ...result, engineS: (await setup.engineCpu()) - before };
}

const meanEngine = (runs: { engineS: number }[]) =>
  round(runs.reduce((sum, run) => sum + run.engineS, 0) / runs.length, 3);

async function measureCopies({ client, srcDir, tree, bigBytes, throughputRuns }: DockerInput, setup: Setup) {
  console.error(`docker copy-in / copy-out: ${throughputRuns} runs each of berth and docker cp`);
  const { env, container } = setup;
  const fileSize = async (
    path: string,
    exec: (command: string[], onStdout: (data: Buffer) => void) => Promise<void>,
  ) => {
    let out = "";
    await exec(["stat", "-c", "%s", path], (data) => (out += data.toString()));
    return Number(out);
  };
  /** cliS: the docker CLI, a child of this process. */
  const cpInMeter = cpuMeter({ cliS: childrenCpuSeconds, engineS: setup.engineCpu });
  const cpOutMeter = cpuMeter({ cliS: childrenCpuSeconds, engineS: setup.engineCpu });
  const peakReset = await writeFile(`/proc/${env.pid}/clear_refs`, "5").then(
    () => true,
    () => false,
  );
  const memoryBefore = await setup.memory();
  const copyIn: (Measured & { engineS: number })[] = [];
  const copyOut: (Measured & { engineS: number })[] = [];
  const cpIn: number[] = [];
  const cpOut: number[] = [];
  let copyOutTarBytes = 0;
  for (let run = 0; run < throughputRuns; run++) {
    await sync();
    cpIn.push(
      await cpInMeter.time(() =>
        runDirect("docker", ["cp", `${srcDir}/.`, `${container.id}:${baselineDir}`]),
      ),
    );
    const copied = await fileSize(`${baselineDir}/big.bin`, (c, o) => directExec(container, c, o));
    if (copied !== bigBytes) throw new Error(`docker cp left big.bin with ${copied} bytes, not ${bigBytes}`);

    const dest = `${env.root}/in${run}`;
    await sync();
    copyIn.push(
      await withEngine(setup, () =>
        measuredCall(env.pid, () => client.copyIn(env.address, env.id, { dir: srcDir, dest, name: "tree" })),
      ),
    );
    const size = Number(await setup.berthExec(["stat", "-c", "%s", `${dest}/tree/big.bin`]));
    if (size !== bigBytes) throw new Error(`copy-in left big.bin with ${size} bytes, not ${bigBytes}`);

    await sync();
    const out = await withEngine(setup, () =>
      measuredCall(env.pid, () => client.copyOut(env.address, env.id, `${dest}/tree`)),
    );
    if (out.tarBytes < tree.bytes)
      throw new Error(`copy-out sent ${out.tarBytes} bytes, less than the tree's ${tree.bytes}`);
    copyOut.push(out);
    copyOutTarBytes = out.tarBytes;

    await sync();
    cpOut.push(
      await cpOutMeter.time(() =>
        runDirect("docker", ["cp", `${container.id}:${baselineDir}`, "-"], "ignore"),
      ),
    );
    await setup.berthExec(["rm", "-rf", dest]);
    await directExec(container, ["rm", "-rf", baselineDir]);
  }
  const memoryAfter = await setup.memory();
  const withEngineCpu = (bytes: number, runs: (Measured & { engineS: number })[]) => {
    const summary = pathSummary(bytes, runs);
    return { ...summary, cpuPerRun: setup.engineOnly({ ...summary.cpuPerRun, engineS: meanEngine(runs) }) };
  };
  return {
    results: {
      copyOutTarBytes,
      runs: throughputRuns,
      copyIn: withEngineCpu(tree.bytes, copyIn),
      copyOut: withEngineCpu(tree.bytes, copyOut),
      dockerCpIn: { ...throughputSummary(tree.bytes, cpIn), cpuPerRun: setup.engineOnly(cpInMeter.cpu()) },
      dockerCpOut: { ...throughputSummary(tree.bytes, cpOut), cpuPerRun: setup.engineOnly(cpOutMeter.cpu()) },
    },
    memory: {
      peakReset,
      baselineRssMiB: toMiB(memoryBefore.current),
      peakRssMiB: toMiB(memoryAfter.peak),
      growthMiB: toMiB(memoryAfter.peak - memoryBefore.current),
    },
  };
}

async function measureLatency(client: BenchClient, setup: Setup) {
  console.error(
    `docker exec latency: ${latency.warmup} warm-up + ${latency.iterations} iterations each, in ${latency.blocks} alternating blocks`,
  );
  const { berth, direct } = await interleavedLatency(
    client,
    setup.env,
    ["true"],
    () => directExec(setup.container, ["true"]),
    latency,
  );
  return { command: ["true"], ...latency, berth: latencySummary(berth), direct: latencySummary(direct) };
}

async function measureOutput({ client, bigBytes, throughputRuns }: DockerInput, setup: Setup) {
  console.error(`docker exec output: ${throughputRuns} runs each of head -c ${bigBytes} /dev/zero`);
  const directOutputMeter = cpuMeter({ clientS: () => cpuSeconds(process.pid), engineS: setup.engineCpu });
  const headCommand = ["head", "-c", String(bigBytes), "/dev/zero"];
  const berthOutput: (Measured & { engineS: number })[] = [];
  const directOutput: number[] = [];
  for (let run = 0; run < throughputRuns; run++) {
    const call = await withEngine(setup, () =>
      measuredCall(setup.env.pid, () => client.exec(setup.env.address, setup.env.id, headCommand)),
    );
    if (call.stdoutBytes !== bigBytes)
      throw new Error(`berth delivered ${call.stdoutBytes} bytes of output, not ${bigBytes}`);
    berthOutput.push(call);
    let received = 0;
    directOutput.push(
      await directOutputMeter.time(() =>
        directExec(setup.container, headCommand, (data) => (received += data.length)),
      ),
    );
    if (received !== bigBytes)
      throw new Error(`dockerode delivered ${received} bytes of output, not ${bigBytes}`);
  }
  const berth = pathSummary(bigBytes, berthOutput);
  return {
    command: headCommand,
    bytes: bigBytes,
    runs: throughputRuns,
    berth: {
      ...berth,
      cpuPerRun: setup.engineOnly({ ...berth.cpuPerRun, engineS: meanEngine(berthOutput) }),
    },
    direct: {
      ...throughputSummary(bigBytes, directOutput),
      cpuPerRun: setup.engineOnly(directOutputMeter.cpu()),
    },
  };
}

// ---------------------------------------------------------------- report

/** Lines printed under the table about the Docker part. */
export function dockerSummaryLines(report: DockerReport): string[] {
  if (report.skipped || "error" in report) return [];
  const r = report;
  const s = (value: number | null) => (value === null ? "?" : value.toFixed(1));
  const engine = r.engine.local
    ? [
        "docker: engine CPU/run (dockerd + containerd + shims), berth vs baseline: " +
          `exec output ${s(r.execThroughput.berth.cpuPerRun.engineS)} vs ${s(r.execThroughput.direct.cpuPerRun.engineS)} s, ` +
          `copy-in ${s(r.copy.copyIn.cpuPerRun.engineS)} vs ${s(r.copy.dockerCpIn.cpuPerRun.engineS)} s, ` +
          `copy-out ${s(r.copy.copyOut.cpuPerRun.engineS)} vs ${s(r.copy.dockerCpOut.cpuPerRun.engineS)} s`,
      ]
    : ["docker: the engine is not on this machine; its CPU is not counted"];
  return [
    ...engine,
    `docker: baseline CPU/run in this process (dockerode) for exec output ${s(r.execThroughput.direct.cpuPerRun.clientS)} s; ` +
      `in the docker CLI for docker cp in ${s(r.copy.dockerCpIn.cpuPerRun.cliS)} s, out ${s(r.copy.dockerCpOut.cpuPerRun.cliS)} s`,
    `docker: latency over ${r.execLatency.iterations} runs; took ${r.durationS} s`,
  ];
}
