/**
 * What the benchmark reports: the targets of the data path (issue 16 of
 * berth's tracker: each a ratio against a baseline of the same run, or a
 * memory bound) and the printed table that shows them beside the figures.
 */
import type { CeilingReport } from "./ceiling.js";
import type { DockerReport } from "./docker.js";
import type { HostReport } from "./host.js";
import type { PathSummary } from "./paths.js";
import { formatTable, round, toMiB } from "./util.js";

export interface Target {
  figure: string;
  value: number | null;
  /** "<= 1.3" or ">= 0.5". */
  target: string;
  met: boolean | null;
}

const atMost = (figure: string, value: number | null, limit: number): Target => ({
  figure,
  value,
  target: `<= ${limit}`,
  met: value === null ? null : value <= limit,
});
const atLeast = (figure: string, value: number | null, limit: number): Target => ({
  figure,
  value,
  target: `>= ${limit}`,
  met: value === null ? null : value >= limit,
});

type DockerMeasured = Extract<DockerReport, { ratios: unknown }>;
const measured = (docker: DockerReport): DockerMeasured | undefined =>
  "ratios" in docker ? docker : undefined;

/** berth's figure over its baseline's. */
export function hostRatios(host: HostReport) {
  return {
    execLatencyP50: round(host.execLatency.berth.p50Ms / host.execLatency.direct.p50Ms),
    execLatencyP99: round(host.execLatency.berth.p99Ms / host.execLatency.direct.p99Ms),
    execThroughput: round(host.execThroughput.berth.mbPerS / host.execThroughput.direct.mbPerS),
    copyIn: round(host.copy.copyIn.mbPerS / host.copy.tarPipe.mbPerS),
    copyOut: round(host.copy.copyOut.mbPerS / host.copy.tarPipe.mbPerS),
  };
}

/** berth's host figures over the ceiling server's: what is left to berth's own pipeline. */
export function ceilingRatios(host: HostReport, ceiling: CeilingReport) {
  return {
    execThroughput: round(host.execThroughput.berth.mbPerS / ceiling.execThroughput.mbPerS),
    copyIn: round(host.copy.copyIn.mbPerS / ceiling.copyIn.mbPerS),
    copyOut: round(host.copy.copyOut.mbPerS / ceiling.copyOut.mbPerS),
  };
}

export function evaluateTargets(host: HostReport, docker: DockerReport) {
  const ratios = hostRatios(host);
  const d = measured(docker);
  return {
    hostLatency: atMost("host Exec `true` p50 / the same bwrap sandbox spawned", ratios.execLatencyP50, 1.3),
    hostOutput: atLeast("host Exec output / spawn pipe", ratios.execThroughput, 0.5),
    hostCopyIn: atLeast("host CopyIn / tar | tar", ratios.copyIn, 0.67),
    hostCopyOut: atLeast("host CopyOut / tar | tar", ratios.copyOut, 0.67),
    dockerLatency: atMost("docker Exec `true` p50 / dockerode", d?.ratios.execLatencyP50 ?? null, 1.05),
    dockerOutput: atLeast("docker Exec output / dockerode", d?.ratios.execThroughput ?? null, 0.9),
    dockerCopyIn: atLeast("docker CopyIn / docker cp", d?.ratios.copyIn ?? null, 0.8),
    dockerCopyOut: atLeast("docker CopyOut / docker cp", d?.ratios.copyOut ?? null, 0.8),
    hostMemoryGrowth: atMost("host daemon RSS growth over the copies, MiB", host.daemonMemory.growthMiB, 64),
    dockerMemoryGrowth: atMost(
      "docker daemon RSS growth over the copies, MiB",
      d?.daemonMemory.growthMiB ?? null,
      64,
    ),
    idleMemory: atMost("idle daemon RSS (host backend), MiB", host.idleRssMiB, 90),
  };
}

export type Targets = ReturnType<typeof evaluateTargets>;

const mark = (met: boolean | null) => (met === null ? "n/a" : met ? "met" : "MISSED");
const ms = (value: number) => `${value.toFixed(2)} ms`;
const perGiB = (path: { cpuPerGiB: { daemonS: number; clientS: number } }) =>
  `${path.cpuPerGiB.daemonS.toFixed(2)} + ${path.cpuPerGiB.clientS.toFixed(2)} s`;

/** A row: measurement, berth, baseline, baseline is, ratio, target (and whether met), CPU per GiB. */
function row(
  name: string,
  berth: string,
  baseline: string,
  baselineIs: string,
  ratio: number,
  target: Target | undefined,
  cpu = "",
): string[] {
  const goal = target ? `${target.target} ${mark(target.met)}` : "";
  return [name, berth, baseline, baselineIs, `${ratio}`, goal, cpu];
}

const mbps = (path: { mbPerS: number }) => `${path.mbPerS} MB/s`;

type Latency = { p50Ms: number; p99Ms: number };

/** One driver's figures, as both parts report them, with what each baseline is and the targets they are held to. */
interface DriverFigures {
  execLatency: { berth: Latency; direct: Latency };
  execThroughput: { bytes: number; berth: PathSummary; direct: { mbPerS: number } };
  copy: { treeBytes: number; copyIn: PathSummary; copyOut: PathSummary };
  baselines: { copyIn: { mbPerS: number }; copyOut: { mbPerS: number } };
  ratios: ReturnType<typeof hostRatios>;
  baselineIs: { exec: string; output: string; copyIn: string; copyOut: string };
  targets: { latency: Target; output: Target; copyIn: Target; copyOut: Target };
}

/** The five rows every driver has: Exec latency p50 and p99, Exec output, CopyIn, CopyOut. */
function driverRows(f: DriverFigures): string[][] {
  const size = `${toMiB(f.execThroughput.bytes)} MiB`;
  const tree = `${toMiB(f.copy.treeBytes)} MiB`;
  const { berth, direct } = f.execLatency;
  return [
    row(
      "exec `true` p50",
      ms(berth.p50Ms),
      ms(direct.p50Ms),
      f.baselineIs.exec,
      f.ratios.execLatencyP50,
      f.targets.latency,
    ),
    row(
      "exec `true` p99",
      ms(berth.p99Ms),
      ms(direct.p99Ms),
      f.baselineIs.exec,
      f.ratios.execLatencyP99,
      undefined,
    ),
    row(
      `exec output ${size}`,
      mbps(f.execThroughput.berth),
      mbps(f.execThroughput.direct),
      f.baselineIs.output,
      f.ratios.execThroughput,
      f.targets.output,
      perGiB(f.execThroughput.berth),
    ),
    ...(["copyIn", "copyOut"] as const).map((way) =>
      row(
        `${way === "copyIn" ? "copy-in" : "copy-out"} tree ${tree}`,
        mbps(f.copy[way]),
        mbps(f.baselines[way]),
        f.baselineIs[way],
        f.ratios[way],
        f.targets[way],
        perGiB(f.copy[way]),
      ),
    ),
  ];
}

function hostRows(
  host: HostReport,
  ceiling: CeilingReport | undefined,
  targets: Targets,
): (string[] | string)[] {
  const lines = [
    "host (berth --backend host, isolation=bwrap, vs the same work done directly)",
    ...driverRows({
      ...host,
      baselines: { copyIn: host.copy.tarPipe, copyOut: host.copy.tarPipe },
      ratios: hostRatios(host),
      baselineIs: {
        exec: "same bwrap, spawned",
        output: "spawn() pipe",
        copyIn: "tar | tar",
        copyOut: "tar | tar",
      },
      targets: {
        latency: targets.hostLatency,
        output: targets.hostOutput,
        copyIn: targets.hostCopyIn,
        copyOut: targets.hostCopyOut,
      },
    }),
  ];
  if (!ceiling) return lines;
  const c = ceilingRatios(host, ceiling);
  const size = `${toMiB(host.execThroughput.bytes)} MiB`;
  const tree = `${toMiB(host.copy.treeBytes)} MiB`;
  const against = (name: string, berth: PathSummary, top: PathSummary, ratio: number) =>
    row(name, mbps(berth), mbps(top), "ceiling server", ratio, undefined, perGiB(top));
  return [
    ...lines,
    "the host figures against the ceiling: the same calls to a server on berth's gRPC stack with no berth logic",
    against(`exec output ${size}`, host.execThroughput.berth, ceiling.execThroughput, c.execThroughput),
    against(`copy-in tree ${tree}`, host.copy.copyIn, ceiling.copyIn, c.copyIn),
    against(`copy-out tree ${tree}`, host.copy.copyOut, ceiling.copyOut, c.copyOut),
  ];
}

function dockerRows(docker: DockerReport, targets: Targets): (string[] | string)[] {
  if (docker.skipped) return [`docker: skipped: ${docker.reason}`];
  if ("error" in docker) return [`docker: FAILED: ${docker.error}`];
  return [
    `docker (berth --backend docker vs the same work on the engine directly; engine ${docker.engine.version}, ${docker.engine.storageDriver})`,
    ...driverRows({
      ...docker,
      baselines: { copyIn: docker.copy.dockerCpIn, copyOut: docker.copy.dockerCpOut },
      baselineIs: {
        exec: "dockerode exec",
        output: "dockerode exec",
        copyIn: "docker cp",
        copyOut: "docker cp > null",
      },
      targets: {
        latency: targets.dockerLatency,
        output: targets.dockerOutput,
        copyIn: targets.dockerCopyIn,
        copyOut: targets.dockerCopyOut,
      },
    }),
  ];
}

/** The printed table of every figure with its baseline, ratio and target. */
export function figureTable(
  host: HostReport,
  ceiling: CeilingReport | undefined,
  docker: DockerReport,
  targets: Targets,
): string[] {
  const header = [
    "measurement",
    "berth",
    "baseline",
    "baseline is",
    "ratio",
    "target",
    "CPU/GiB: daemon + client",
  ];
  return formatTable(header, [...hostRows(host, ceiling, targets), "", ...dockerRows(docker, targets)]);
}

/** The memory and startup lines, with their targets. */
export function memoryLines(
  host: HostReport,
  ceiling: CeilingReport,
  docker: DockerReport,
  targets: Targets,
): string[] {
  const m = host.daemonMemory;
  const d = measured(docker);
  const line = (what: string, memory: HostReport["daemonMemory"], target: Target) =>
    `${what} daemon RSS around the copies: ${memory.baselineRssMiB} MiB before, peak ${memory.peakRssMiB} MiB ` +
    `(+${memory.growthMiB} MiB; target ${target.target} ${mark(target.met)})` +
    (memory.peakReset ? "" : " [VmHWM could not be reset: the peak covers the daemon's whole life]");
  return [
    `host daemon: startup to health SERVING ${host.startupToServingMs} ms; idle RSS ${host.idleRssMiB} MiB ` +
      `(one backend, no environment; target ${targets.idleMemory.target} ${mark(targets.idleMemory.met)})`,
    line("host", m, targets.hostMemoryGrowth),
    ...(d ? [line("docker", d.daemonMemory, targets.dockerMemoryGrowth)] : []),
    `ceiling server RSS around its exec output and copies: ${ceiling.serverMemory.baselineRssMiB} MiB before, ` +
      `peak ${ceiling.serverMemory.peakRssMiB} MiB (+${ceiling.serverMemory.growthMiB} MiB: the gRPC stack's own)`,
  ];
}
