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
  timed,
  toMiB,
  packDirectory,
} from "./util.js";

/** As for the host part: `info` rather than `warn`, or startDaemon would never see the "serving" line. */
export const dockerDaemonArgs = ["--backend", "docker", "--log-level", "info"];
const image = testImages.busybox;
/** On every container the benchmark creates itself (berth labels its own). */
const benchLabel = "berth.bench";
const latencyWarmup = 10;
const latencyIterations = 100;
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

async function measure(
  { srcDir, tree, bigBytes, throughputRuns }: DockerInput,
  teardown: { daemonExit: number | null | undefined },
) {
  // The host part's peak is in results.benchProcessPeakRssMiB; this part reports its own.
  await writeFile("/proc/self/clear_refs", "5").catch(() => undefined);
  console.error(`docker: building the test images if needed (${image})`);
  await ensureTestImages();
  const docker = new Docker();
  const version = await docker.version();
  const info = (await docker.info()) as { Driver?: string; CgroupVersion?: string };
  const engineLocal = (await findProcesses((comm) => comm === "dockerd")).length > 0;
  /** Engine CPU only counts when the engine runs on this machine. */
  const engineCpu = engineLocal ? () => cpuSecondsOfProcesses(isEngineProcess) : () => Promise.resolve(0);
  const engineOnly = <T extends { engineS: number }>(cpu: T) =>
    engineLocal ? cpu : { ...cpu, engineS: null };

  const daemon = await startDaemon(dockerDaemonArgs);
  defer(async () => {
    teardown.daemonExit = await daemon.stop();
  });
  const channel = openChannel(daemon.address);
  defer(() => Promise.resolve(channel.close()));
  const client = v1alphaClient(channel);
  const { id, layout } = await client.create({ image });
  defer(() => client.remove(id));
  await client.start(id);
  const rootPath = layout!.rootPath;

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

  const berthExec = async (command: string[], onStdout?: (data: Buffer) => void) => {
    const outcome = await client.exec(id, command, {
      onOutput: (stream, data) => stream === "stdout" && onStdout?.(data),
    });
    if (outcome.exitCode !== 0)
      throw new Error(`${command.join(" ")} through berth: ${JSON.stringify(outcome)}`);
  };
  const fileSize = async (exec: typeof berthExec, path: string) => {
    let out = "";
    await exec(["stat", "-c", "%s", path], (data) => (out += data.toString()));
    return Number(out);
  };

  const daemonPid = daemon.child.pid!;
  const berthSources = {
    daemonS: () => cpuSeconds(daemonPid),
    clientS: () => cpuSeconds(process.pid),
    engineS: engineCpu,
  };

  // ---- copy-in / copy-out (first, so the daemon's memory is measured on a fresh process)
  console.error(`docker copy-in / copy-out: ${throughputRuns} runs each of berth and docker cp`);
  const copyInMeter = cpuMeter(berthSources);
  const copyOutMeter = cpuMeter(berthSources);
  /** cliS: the docker CLI, a child of this process. */
  const cpInMeter = cpuMeter({ cliS: childrenCpuSeconds, engineS: engineCpu });
  const cpOutMeter = cpuMeter({ cliS: childrenCpuSeconds, engineS: engineCpu });
  let peakReset = true;
  try {
    await writeFile(`/proc/${daemonPid}/clear_refs`, "5"); // resets VmHWM to the current RSS
  } catch {
    peakReset = false;
  }
  const memoryBefore = await daemon.memory();
  const copyIn: number[] = [];
  const copyOut: number[] = [];
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
    const copied = await fileSize((c, o) => directExec(container, c, o), `${baselineDir}/big.bin`);
    if (copied !== bigBytes) throw new Error(`docker cp left big.bin with ${copied} bytes, not ${bigBytes}`);

    const dest = `${rootPath}/in${run}`;
    await sync();
    copyIn.push(
      await copyInMeter.time(async () => client.copyIn(id, dest, await packDirectory(srcDir, "tree"))),
    );
    const size = await fileSize(berthExec, `${dest}/tree/big.bin`);
    if (size !== bigBytes) throw new Error(`copy-in left big.bin with ${size} bytes, not ${bigBytes}`);

    await sync();
    let received = 0;
    copyOut.push(
      await copyOutMeter.time(async () => {
        for await (const chunk of client.copyOut(id, `${dest}/tree`)) received += chunk.length;
      }),
    );
    if (received < tree.bytes)
      throw new Error(`copy-out sent ${received} bytes, less than the tree's ${tree.bytes}`);
    copyOutTarBytes = received;

    await sync();
    cpOut.push(
      await cpOutMeter.time(() =>
        runDirect("docker", ["cp", `${container.id}:${baselineDir}`, "-"], "ignore"),
      ),
    );

    await berthExec(["rm", "-rf", dest]);
    await directExec(container, ["rm", "-rf", baselineDir]);
  }
  const memoryAfter = await daemon.memory();

  // ---- exec round-trip latency
  console.error(
    `docker exec latency: ${latencyWarmup} warm-up + ${latencyIterations} iterations each, interleaved`,
  );
  const berthTrue = () => berthExec(["true"]);
  const directTrue = () => directExec(container, ["true"]);
  for (let i = 0; i < latencyWarmup; i++) {
    await berthTrue();
    await directTrue();
  }
  const berthLatency: number[] = [];
  const directLatency: number[] = [];
  for (let i = 0; i < latencyIterations; i++) {
    berthLatency.push((await timed(berthTrue)) * 1000);
    directLatency.push((await timed(directTrue)) * 1000);
  }
  berthLatency.sort((a, b) => a - b);
  directLatency.sort((a, b) => a - b);

  // ---- exec output throughput
  console.error(`docker exec output: ${throughputRuns} runs each of head -c ${bigBytes} /dev/zero`);
  const outputMeter = cpuMeter(berthSources);
  const directOutputMeter = cpuMeter({ clientS: () => cpuSeconds(process.pid), engineS: engineCpu });
  const headCommand = ["head", "-c", String(bigBytes), "/dev/zero"];
  const berthOutput: number[] = [];
  const directOutput: number[] = [];
  for (let run = 0; run < throughputRuns; run++) {
    let received = 0;
    berthOutput.push(
      await outputMeter.time(() => berthExec(headCommand, (data) => (received += data.length))),
    );
    if (received !== bigBytes)
      throw new Error(`berth delivered ${received} bytes of output, not ${bigBytes}`);
    received = 0;
    directOutput.push(
      await directOutputMeter.time(() =>
        directExec(container, headCommand, (data) => (received += data.length)),
      ),
    );
    if (received !== bigBytes)
      throw new Error(`dockerode delivered ${received} bytes of output, not ${bigBytes}`);
  }

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
    execLatency: {
      command: ["true"],
      warmup: latencyWarmup,
      iterations: latencyIterations,
      berth: latencySummary(berthLatency),
      direct: latencySummary(directLatency),
    },
    execThroughput: {
      command: headCommand,
      bytes: bigBytes,
      runs: throughputRuns,
      berth: { ...throughputSummary(bigBytes, berthOutput), cpuPerRun: engineOnly(outputMeter.cpu()) },
      direct: {
        ...throughputSummary(bigBytes, directOutput),
        cpuPerRun: engineOnly(directOutputMeter.cpu()),
      },
    },
    copy: {
      treeBytes: tree.bytes,
      files: tree.files,
      copyOutTarBytes,
      runs: throughputRuns,
      copyIn: { ...throughputSummary(tree.bytes, copyIn), cpuPerRun: engineOnly(copyInMeter.cpu()) },
      copyOut: { ...throughputSummary(tree.bytes, copyOut), cpuPerRun: engineOnly(copyOutMeter.cpu()) },
      dockerCpIn: { ...throughputSummary(tree.bytes, cpIn), cpuPerRun: engineOnly(cpInMeter.cpu()) },
      dockerCpOut: { ...throughputSummary(tree.bytes, cpOut), cpuPerRun: engineOnly(cpOutMeter.cpu()) },
    },
    daemonMemory: {
      peakReset,
      baselineRssMiB: toMiB(memoryBefore.current),
      peakRssMiB: toMiB(memoryAfter.peak),
      growthMiB: toMiB(memoryAfter.peak - memoryBefore.current),
    },
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

// ---------------------------------------------------------------- report

const cpuText = (c: { daemonS: number; clientS: number }) =>
  `${c.daemonS.toFixed(1)} + ${c.clientS.toFixed(1)} s`;
const ms = (value: number) => `${value.toFixed(2)} ms`;

/** The Docker section of the printed table (same columns as the host part). */
export function dockerTableRows(report: DockerReport, bigBytes: number): (string[] | string)[] {
  if (report.skipped) return [`docker: skipped: ${report.reason}`];
  if ("error" in report) return [`docker: FAILED: ${report.error}`];
  const r = report;
  const size = `${toMiB(bigBytes)} MiB`;
  const treeSize = `${toMiB(r.copy.treeBytes)} MiB`;
  return [
    `docker (berth --backend docker vs the same work on the engine directly; engine ${r.engine.version}, ${r.engine.storageDriver})`,
    [
      "exec `true` p50",
      ms(r.execLatency.berth.p50Ms),
      ms(r.execLatency.direct.p50Ms),
      "dockerode exec",
      `${r.ratios.execLatencyP50}x`,
      "",
    ],
    [
      "exec `true` p99",
      ms(r.execLatency.berth.p99Ms),
      ms(r.execLatency.direct.p99Ms),
      "dockerode exec",
      `${r.ratios.execLatencyP99}x`,
      "",
    ],
    [
      `exec output ${size}`,
      `${r.execThroughput.berth.mbPerS} MB/s`,
      `${r.execThroughput.direct.mbPerS} MB/s`,
      "dockerode exec",
      `${r.ratios.execThroughput}`,
      cpuText(r.execThroughput.berth.cpuPerRun),
    ],
    [
      `copy-in tree ${treeSize}`,
      `${r.copy.copyIn.mbPerS} MB/s`,
      `${r.copy.dockerCpIn.mbPerS} MB/s`,
      "docker cp",
      `${r.ratios.copyIn}`,
      cpuText(r.copy.copyIn.cpuPerRun),
    ],
    [
      `copy-out tree ${treeSize}`,
      `${r.copy.copyOut.mbPerS} MB/s`,
      `${r.copy.dockerCpOut.mbPerS} MB/s`,
      "docker cp > null",
      `${r.ratios.copyOut}`,
      cpuText(r.copy.copyOut.cpuPerRun),
    ],
  ];
}

/** Lines printed under the table about the Docker part. */
export function dockerSummaryLines(report: DockerReport, bigBytes: number): string[] {
  if (report.skipped || "error" in report) return [];
  const r = report;
  const m = r.daemonMemory;
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
    `docker: daemon RSS around the ${toMiB(bigBytes)} MiB copies: ${m.baselineRssMiB} MiB before, peak ${m.peakRssMiB} MiB (+${m.growthMiB} MiB)` +
      (m.peakReset ? "" : " [VmHWM could not be reset: the peak covers the daemon's whole life]"),
    ...engine,
    `docker: baseline CPU/run in this process (dockerode) for exec output ${s(r.execThroughput.direct.cpuPerRun.clientS)} s; ` +
      `in the docker CLI for docker cp in ${s(r.copy.dockerCpIn.cpuPerRun.cliS)} s, out ${s(r.copy.dockerCpOut.cpuPerRun.cliS)} s`,
    `docker: latency over ${r.execLatency.iterations} runs; took ${r.durationS} s`,
  ];
}
