/**
 * berth benchmark: what the daemon costs compared with doing the same work
 * directly on this machine, measured in one run: the host driver
 * (bench/host.ts), the same calls to a server with none of berth's logic
 * (bench/ceiling.ts), then the Docker driver when an engine answers
 * (bench/docker.ts). See bench/README.md.
 *
 *   npm run bench                    # 1 GiB payloads, the grpc-go client
 *   npm run bench -- --quick         # 256 MiB payloads (or BENCH_QUICK=1)
 *   npm run bench -- --client node   # berth's Node client instead
 *
 * Prints a table with the targets and writes bench/results.json. Nothing
 * here asserts timing: it fails only when something does not work.
 */
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { type CeilingReport, measureCeiling } from "./ceiling.js";
import { chooseClient } from "./clients.js";
import { type DockerReport, dockerSummaryLines, dockerUnavailable, measureDocker } from "./docker.js";
import { hostDaemonArgs, measureHost } from "./host.js";
import { ceilingRatios, evaluateTargets, figureTable, hostRatios, memoryLines } from "./report.js";
import { MiB, cleanup, cleanupMark, defer, ownPeakRss, round, toMiB } from "./util.js";

const quick = process.argv.includes("--quick") || process.env.BENCH_QUICK === "1";
const clientFlag = process.argv.indexOf("--client");
const askedClient = clientFlag === -1 ? undefined : process.argv[clientFlag + 1];
const bigBytes = quick ? 256 * MiB : 1024 * MiB;
/** Throughput is the median of this many runs of each (berth and baseline alternate). */
const throughputRuns = 3;
const smallFileCount = 1000;

const resultsPath = fileURLToPath(new URL("../../bench/results.json", import.meta.url));

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

/** The Docker part, or why it did not run; a failure is reported and makes the run exit 1. */
async function dockerPart(input: Parameters<typeof measureDocker>[0]): Promise<DockerReport> {
  const unavailable = await dockerUnavailable();
  if (unavailable !== undefined) {
    console.error(`docker: skipped: ${unavailable}`);
    return { skipped: true, reason: unavailable };
  }
  try {
    return await measureDocker(input);
  } catch (err) {
    console.error("docker part failed:", err);
    process.exitCode = 1;
    return { skipped: false, error: err instanceof Error ? err.message : String(err) };
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  const loadAtStart = os.loadavg();
  const client = await chooseClient(askedClient);
  defer(() => Promise.resolve(client.close()));
  const tmp = await mkdtemp(join(os.tmpdir(), "berth-bench-"));
  defer(() => rm(tmp, { recursive: true, force: true }));
  const srcDir = join(tmp, "src");
  await mkdir(srcDir);
  console.error(`creating the tree (${toMiB(bigBytes)} MiB file + ${smallFileCount} small files) in ${tmp}`);
  const tree = await makeTree(srcDir);
  const input = { client, tmp, srcDir, tree, bigBytes, throughputRuns };

  const hostMark = cleanupMark();
  const host = await measureHost(input);
  await cleanup(hostMark);
  const ceilingMark = cleanupMark();
  const ceiling: CeilingReport = await measureCeiling(input);
  await cleanup(ceilingMark);
  const docker = await dockerPart(input);
  const benchProcessPeakRss = await ownPeakRss();
  await cleanup();

  const { teardown, ...results } = host;
  const targets = evaluateTargets(host, docker);
  const report = {
    measuredAt: new Date().toISOString(),
    node: process.version,
    client: client.name,
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
      daemonArgs: hostDaemonArgs,
      transport: "unix socket",
      generation: "v1alpha",
      driver: "host",
    },
    results: {
      ...results,
      benchProcessPeakRssMiB: toMiB(benchProcessPeakRss),
      daemonExitCode: teardown.daemonExit ?? null,
    },
    ratios: hostRatios(host),
    ceiling: { ...ceiling, ratios: ceilingRatios(host, ceiling) },
    docker,
    targets: Object.values(targets),
  };
  await writeFile(resultsPath, `${JSON.stringify(report, null, 2)}\n`);

  const missed = report.targets.filter((target) => target.met === false).length;
  console.log(
    [
      `berth benchmark  ${report.measuredAt}  node ${report.node}  ${report.machine.cpus} CPUs  ${report.machine.memGiB} GiB RAM`,
      `client: ${client.name}`,
      "ratio = berth / baseline: for latency higher is slower, for throughput lower is slower",
      "",
      ...figureTable(host, ceiling, docker, targets),
      "",
      ...memoryLines(host, ceiling, docker, targets),
      ...dockerSummaryLines(docker),
      `targets: ${report.targets.length - missed} of ${report.targets.length} met` +
        (missed > 0 ? ` (${missed} missed: see bench/README.md, "Where the time goes")` : ""),
      `MB = 10^6 bytes; throughput is the median of ${throughputRuns} runs; ` +
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
