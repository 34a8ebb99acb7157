/**
 * berth benchmark: what the daemon costs compared with doing the same work
 * directly on this machine, measured in one run: the host driver, then the
 * Docker driver when an engine answers (bench/docker.ts). See bench/README.md.
 *
 *   npm run bench              # 1 GiB payloads
 *   npm run bench -- --quick   # 256 MiB payloads (or BENCH_QUICK=1)
 *
 * Prints a table and writes bench/results.json. Nothing here asserts timing.
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { openChannel, v1alphaClient } from "../src/client.js";
import { startDaemon } from "../test/support/daemon-process.js";
import {
  type DockerReport,
  dockerSummaryLines,
  dockerTableRows,
  dockerUnavailable,
  measureDocker,
} from "./docker.js";
import {
  MiB,
  berthMeter,
  cleanup,
  cleanupMark,
  defer,
  formatTable,
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

const quick = process.argv.includes("--quick") || process.env.BENCH_QUICK === "1";
const bigBytes = quick ? 256 * MiB : 1024 * MiB;
const latencyWarmup = 20;
const latencyIterations = 200;
/** Throughput is the median of this many runs of each (berth and baseline alternate). */
const throughputRuns = 3;
const smallFileCount = 1000;

/**
 * `--log-level warn` is what we want (later flags win over startDaemon's
 * `--log-level debug`), but startDaemon waits for the info-level "berth serving
 * on" line, which warn suppresses, so it would never return. `info` drops the
 * per-RPC debug lines just as warn does; what remains is a handful of lines
 * per environment, none per call.
 */
const daemonArgs = ["--backend", "host", "--backend-opt", "isolation=bwrap", "--log-level", "info"];

const resultsPath = fileURLToPath(new URL("../../bench/results.json", import.meta.url));

/** The baseline for both copy directions: GNU tar packing into GNU tar extracting, through a pipe. */
const tarPipe = (src: string, dst: string) =>
  runDirect("bash", ["-c", 'set -o pipefail; tar -C "$1" -cf - . | tar -C "$2" -xf -', "bash", src, dst]);

/** A directory of real files: one of `bigBytes` and `smallFileCount` small ones (0.5–8.5 KiB) in 10 subdirectories. */
async function makeTree(dir: string): Promise<{ bytes: number; files: number }> {
  const block = randomBytes(MiB);
  const handle = await open(join(dir, "big.bin"), "w");
  try {
    for (let written = 0; written < bigBytes; written += block.length) {
      await handle.write(block, 0, Math.min(block.length, bigBytes - written));
    }
  } finally {
    await handle.close();
  }
  let bytes = bigBytes;
  for (let i = 0; i < smallFileCount; i++) {
    const sub = join(dir, "small", `d${i % 10}`);
    if (i < 10) await mkdir(sub, { recursive: true });
    const size = 512 + ((i * 7919) % 8192);
    await writeFile(join(sub, `f${String(i).padStart(4, "0")}.txt`), block.subarray(i, i + size));
    bytes += size;
  }
  return { bytes, files: smallFileCount + 1 };
}

// ---------------------------------------------------------------- run

process.once("SIGINT", () => {
  console.error("interrupted; cleaning up");
  void cleanup().finally(() => process.exit(130));
});

async function main(): Promise<void> {
  const started = performance.now();
  const loadAtStart = os.loadavg();
  const tmp = await mkdtemp(join(os.tmpdir(), "berth-bench-"));
  defer(() => rm(tmp, { recursive: true, force: true }));
  const srcDir = join(tmp, "src");
  await mkdir(srcDir);
  console.error(`creating the tree (${toMiB(bigBytes)} MiB file + ${smallFileCount} small files) in ${tmp}`);
  const tree = await makeTree(srcDir);
  /** The host part's daemon, channel and environment are undone down to here; the tree stays for the Docker part. */
  const hostMark = cleanupMark();

  const daemon = await startDaemon(daemonArgs);
  let daemonExit: number | null | undefined;
  defer(async () => {
    daemonExit = await daemon.stop();
  });
  const channel = openChannel(daemon.address);
  defer(() => Promise.resolve(channel.close()));
  const client = v1alphaClient(channel);
  const { id, layout } = await client.create({});
  defer(() => client.remove(id));
  await client.start(id);
  const rootPath = layout!.rootPath;

  const berthExec = async (command: string[], onOutput?: (stream: string, data: Buffer) => void) => {
    const outcome = await client.exec(id, command, { onOutput });
    if (outcome.exitCode !== 0)
      throw new Error(`${command.join(" ")} through berth: ${JSON.stringify(outcome)}`);
  };

  // ---- copy-in / copy-out (first, so the daemon's memory is measured on a fresh process)
  console.error(`copy-in / copy-out: ${throughputRuns} runs each of berth and the tar pipe`);
  const daemonPid = daemon.child.pid!;
  const copyInMeter = berthMeter(daemonPid);
  const copyOutMeter = berthMeter(daemonPid);
  let peakReset = true;
  try {
    await writeFile(`/proc/${daemon.child.pid}/clear_refs`, "5"); // resets VmHWM to the current RSS
  } catch {
    peakReset = false;
  }
  const memoryBefore = await daemon.memory();
  const copyIn: number[] = [];
  const copyOut: number[] = [];
  const pipe: number[] = [];
  let copyOutTarBytes = 0;
  for (let run = 0; run < throughputRuns; run++) {
    const dst = join(tmp, `dst${run}`);
    await mkdir(dst);
    await sync();
    pipe.push(await timed(() => tarPipe(srcDir, dst)));
    await rm(dst, { recursive: true, force: true });

    const dest = `${rootPath}/in${run}`;
    await sync();
    copyIn.push(
      await copyInMeter.time(async () => client.copyIn(id, dest, await packDirectory(srcDir, "tree"))),
    );
    let size = "";
    await berthExec(["stat", "-c", "%s", `${dest}/tree/big.bin`], (_, data) => (size += data.toString()));
    if (Number(size) !== bigBytes)
      throw new Error(`copy-in left big.bin with ${size.trim()} bytes, not ${bigBytes}`);

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
    await berthExec(["rm", "-rf", dest]);
  }
  const memoryAfter = await daemon.memory();

  // ---- exec round-trip latency
  console.error(`exec latency: ${latencyWarmup} warm-up + ${latencyIterations} iterations each, interleaved`);
  const berthTrue = () => berthExec(["true"]);
  const directTrue = () => runDirect("true", []);
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
  console.error(`exec output: ${throughputRuns} runs each of head -c ${bigBytes} /dev/zero`);
  const outputMeter = berthMeter(daemonPid);
  const headArgs = ["-c", String(bigBytes), "/dev/zero"];
  const berthOutput: number[] = [];
  const directOutput: number[] = [];
  for (let run = 0; run < throughputRuns; run++) {
    let received = 0;
    berthOutput.push(
      await outputMeter.time(() => berthExec(["head", ...headArgs], (_, data) => (received += data.length))),
    );
    if (received !== bigBytes)
      throw new Error(`berth delivered ${received} bytes of output, not ${bigBytes}`);
    received = 0;
    directOutput.push(await timed(() => runDirect("head", headArgs, (chunk) => (received += chunk.length))));
    if (received !== bigBytes) throw new Error(`head delivered ${received} bytes, not ${bigBytes}`);
  }

  // ---- tear down the host part (remove, close, stop) before the Docker part
  await cleanup(hostMark);
  const daemonLog = daemon.log();
  const benchProcessPeakRss = await ownPeakRss();

  // ---- the Docker driver, when an engine answers; it reuses the tree
  let docker: DockerReport;
  const unavailable = await dockerUnavailable();
  if (unavailable !== undefined) {
    console.error(`docker: skipped: ${unavailable}`);
    docker = { skipped: true, reason: unavailable };
  } else {
    try {
      docker = await measureDocker({ srcDir, tree, bigBytes, throughputRuns });
    } catch (err) {
      console.error("docker part failed:", err);
      docker = { skipped: false, error: err instanceof Error ? err.message : String(err) };
      process.exitCode = 1;
    }
  }

  // ---- delete the tree before reporting
  await cleanup();

  const latency = latencySummary;
  const throughput = throughputSummary;
  const results = {
    execLatency: {
      command: ["true"],
      warmup: latencyWarmup,
      iterations: latencyIterations,
      berth: latency(berthLatency),
      direct: latency(directLatency),
    },
    execThroughput: {
      command: ["head", ...headArgs],
      bytes: bigBytes,
      runs: throughputRuns,
      berth: { ...throughput(bigBytes, berthOutput), cpuPerRun: outputMeter.cpu() },
      direct: throughput(bigBytes, directOutput),
    },
    copy: {
      treeBytes: tree.bytes,
      files: tree.files,
      copyOutTarBytes,
      runs: throughputRuns,
      copyIn: { ...throughput(tree.bytes, copyIn), cpuPerRun: copyInMeter.cpu() },
      copyOut: { ...throughput(tree.bytes, copyOut), cpuPerRun: copyOutMeter.cpu() },
      tarPipe: throughput(tree.bytes, pipe),
    },
    daemonMemory: {
      peakReset,
      baselineRssMiB: toMiB(memoryBefore.current),
      peakRssMiB: toMiB(memoryAfter.peak),
      growthMiB: toMiB(memoryAfter.peak - memoryBefore.current),
    },
    benchProcessPeakRssMiB: toMiB(benchProcessPeakRss),
    daemonExitCode: daemonExit ?? null,
    daemonDebugLines: daemonLog.split("\n").filter((line) => line.includes('"level":20')).length,
  };
  const ratios = {
    execLatencyP50: round(results.execLatency.berth.p50Ms / results.execLatency.direct.p50Ms),
    execLatencyP99: round(results.execLatency.berth.p99Ms / results.execLatency.direct.p99Ms),
    execThroughput: round(results.execThroughput.berth.mbPerS / results.execThroughput.direct.mbPerS),
    copyIn: round(results.copy.copyIn.mbPerS / results.copy.tarPipe.mbPerS),
    copyOut: round(results.copy.copyOut.mbPerS / results.copy.tarPipe.mbPerS),
  };
  const report = {
    measuredAt: new Date().toISOString(),
    node: process.version,
    machine: {
      cpus: os.cpus().length,
      memGiB: round(os.totalmem() / 1024 ** 3, 1),
      cpuModel: os.cpus()[0]?.model,
      kernel: os.release(),
      /** 1-minute load average: other work on the machine skews both sides of every ratio. */
      loadAvg1m: { atStart: round(loadAtStart[0]), atEnd: round(os.loadavg()[0]) },
    },
    config: {
      durationS: round((performance.now() - started) / 1000, 1),
      quick,
      bigBytes,
      daemonArgs,
      transport: "unix socket",
      generation: "v1alpha",
      driver: "host",
    },
    results,
    ratios,
    docker,
  };
  await writeFile(resultsPath, `${JSON.stringify(report, null, 2)}\n`);

  const r = results;
  const size = `${toMiB(bigBytes)} MiB`;
  const treeSize = `${toMiB(tree.bytes)} MiB`;
  const cpu = (c: { daemonS: number; clientS: number }) =>
    `${c.daemonS.toFixed(1)} + ${c.clientS.toFixed(1)} s`;
  const ms = (value: number) => `${value.toFixed(2)} ms`;
  const header = [
    "measurement",
    "berth",
    "baseline",
    "baseline is",
    "ratio",
    "berth CPU/run: daemon + client",
  ];
  const rows: (string[] | string)[] = [
    "host (berth --backend host, isolation=bwrap, vs the same work done directly)",
    [
      "exec `true` p50",
      ms(r.execLatency.berth.p50Ms),
      ms(r.execLatency.direct.p50Ms),
      "spawn()",
      `${ratios.execLatencyP50}x`,
      "",
    ],
    [
      "exec `true` p99",
      ms(r.execLatency.berth.p99Ms),
      ms(r.execLatency.direct.p99Ms),
      "spawn()",
      `${ratios.execLatencyP99}x`,
      "",
    ],
    [
      `exec output ${size}`,
      `${r.execThroughput.berth.mbPerS} MB/s`,
      `${r.execThroughput.direct.mbPerS} MB/s`,
      "spawn()",
      `${ratios.execThroughput}`,
      cpu(r.execThroughput.berth.cpuPerRun),
    ],
    [
      `copy-in tree ${treeSize}`,
      `${r.copy.copyIn.mbPerS} MB/s`,
      `${r.copy.tarPipe.mbPerS} MB/s`,
      "tar | tar",
      `${ratios.copyIn}`,
      cpu(r.copy.copyIn.cpuPerRun),
    ],
    [
      `copy-out tree ${treeSize}`,
      `${r.copy.copyOut.mbPerS} MB/s`,
      `${r.copy.tarPipe.mbPerS} MB/s`,
      "tar | tar",
      `${ratios.copyOut}`,
      cpu(r.copy.copyOut.cpuPerRun),
    ],
  ];
  const m = r.daemonMemory;
  console.log(
    [
      `berth benchmark  ${report.measuredAt}  node ${report.node}  ${report.machine.cpus} CPUs  ${report.machine.memGiB} GiB RAM`,
      "latency ratio = berth/baseline (higher is slower); throughput ratio = berth MB/s / baseline MB/s (lower is slower)",
      "",
      ...formatTable(header, [...rows, "", ...dockerTableRows(docker, bigBytes)]),
      "",
      `daemon RSS around the ${size} copies: ${m.baselineRssMiB} MiB before, peak ${m.peakRssMiB} MiB (+${m.growthMiB} MiB)` +
        (m.peakReset ? "" : " [VmHWM could not be reset: the peak covers the daemon's whole life]"),
      `benchmark process peak RSS: ${r.benchProcessPeakRssMiB} MiB`,
      ...dockerSummaryLines(docker, bigBytes),
      `MB = 10^6 bytes; throughput is the median of ${throughputRuns} runs; latency over ${latencyIterations} runs; ` +
        `load average ${report.machine.loadAvg1m.atStart} at start, ${report.machine.loadAvg1m.atEnd} at end; took ${report.config.durationS} s`,
      `written to ${resultsPath}`,
    ].join("\n"),
  );
}

try {
  await main();
} catch (err) {
  console.error(err);
  await cleanup();
  process.exitCode = 1;
}
