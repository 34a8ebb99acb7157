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

function hostRows(
  host: HostReport,
  ceiling: CeilingReport | undefined,
  targets: Targets,
): (string[] | string)[] {
  const r = hostRatios(host);
  const size = `${toMiB(host.execThroughput.bytes)} MiB`;
  const tree = `${toMiB(host.copy.treeBytes)} MiB`;
  const lines: (string[] | string)[] = [
    "host (berth --backend host, isolation=bwrap, vs the same work done directly)",
    row(
      "exec `true` p50",
      ms(host.execLatency.berth.p50Ms),
      ms(host.execLatency.direct.p50Ms),
      "same bwrap, spawned",
      r.execLatencyP50,
      targets.hostLatency,
    ),
    row(
      "exec `true` p99",
      ms(host.execLatency.berth.p99Ms),
      ms(host.execLatency.direct.p99Ms),
      "same bwrap, spawned",
      r.execLatencyP99,
      undefined,
    ),
    row(
      `exec output ${size}`,
      mbps(host.execThroughput.berth),
      mbps(host.execThroughput.direct),
      "spawn() pipe",
      r.execThroughput,
      targets.hostOutput,
      perGiB(host.execThroughput.berth),
    ),
    row(
      `copy-in tree ${tree}`,
      mbps(host.copy.copyIn),
      mbps(host.copy.tarPipe),
      "tar | tar",
      r.copyIn,
      targets.hostCopyIn,
      perGiB(host.copy.copyIn),
    ),
    row(
      `copy-out tree ${tree}`,
      mbps(host.copy.copyOut),
      mbps(host.copy.tarPipe),
      "tar | tar",
      r.copyOut,
      targets.hostCopyOut,
      perGiB(host.copy.copyOut),
    ),
  ];
  if (!ceiling) return lines;
  const c = ceilingRatios(host, ceiling);
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
  const r = docker;
  const size = `${toMiB(r.execThroughput.bytes)} MiB`;
  const tree = `${toMiB(r.copy.treeBytes)} MiB`;
  return [
    `docker (berth --backend docker vs the same work on the engine directly; engine ${r.engine.version}, ${r.engine.storageDriver})`,
    row(
      "exec `true` p50",
      ms(r.execLatency.berth.p50Ms),
      ms(r.execLatency.direct.p50Ms),
      "dockerode exec",
      r.ratios.execLatencyP50,
      targets.dockerLatency,
    ),
    row(
      "exec `true` p99",
      ms(r.execLatency.berth.p99Ms),
      ms(r.execLatency.direct.p99Ms),
      "dockerode exec",
      r.ratios.execLatencyP99,
      undefined,
    ),
    row(
      `exec output ${size}`,
      mbps(r.execThroughput.berth),
      mbps(r.execThroughput.direct),
      "dockerode exec",
      r.ratios.execThroughput,
      targets.dockerOutput,
      perGiB(r.execThroughput.berth),
    ),
    row(
      `copy-in tree ${tree}`,
      mbps(r.copy.copyIn),
      mbps(r.copy.dockerCpIn),
      "docker cp",
      r.ratios.copyIn,
      targets.dockerCopyIn,
      perGiB(r.copy.copyIn),
    ),
    row(
      `copy-out tree ${tree}`,
      mbps(r.copy.copyOut),
      mbps(r.copy.dockerCpOut),
      "docker cp > null",
      r.ratios.copyOut,
      targets.dockerCopyOut,
      perGiB(r.copy.copyOut),
    ),
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
