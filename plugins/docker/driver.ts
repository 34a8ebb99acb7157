import { posix } from "node:path";
import type { Readable } from "node:stream";
import type Docker from "dockerode";
import type { Logger } from "pino";
import { pack } from "tar-stream";
import type {
  CreatedEnvironment,
  Driver,
  DriverCapabilities,
  EnvironmentRef,
  EnvironmentSpec,
  ExecResult,
  ExecSinks,
  ExecSpec,
  ManagedEnvironment,
} from "../../src/driver.js";
import {
  BerthError,
  Status,
  failedPrecondition,
  invalidArgument,
  missingPath,
  unavailable,
} from "../../src/errors.js";
import { keyValueEntries, keyValueMap } from "../../src/key-value.js";
import { type RunInJobContainer, readOomKillCounter, signalMarked } from "../kit/container-commands.js";
import { containerLayout, containerLayoutPaths } from "../kit/container-layout.js";
import { newExecMarker } from "../kit/exec-marker.js";
import { OomKillCounts } from "../kit/exec-outcome.js";
import { type KillEscalation, escalateKill } from "../kit/kill-escalation.js";
import { createdAt, environmentLabels, labels } from "../kit/labels.js";
import { CollectingWritable } from "../kit/output-capture.js";
import { runnerArch, runnerOs } from "../kit/runner-platform.js";
import { readFileThroughCopyOut } from "../kit/tar-read.js";
import { jobOptionKeys, parseJobOptions, portBindings } from "./job-options.js";
import { demuxExecOutput, release } from "./demux.js";
import { connectToEngine } from "./engine.js";
import { dockerError, engineMessage, isConnectionError, isNotFound } from "./errors.js";
import { EngineImages } from "./images.js";
import type { DockerEnvironment } from "./state.js";
import type { DockerOptions } from "./options.js";

/** The job container runs this instead of its image's entrypoint, so that Exec can run the steps (as act does). */
const keepAlive = ["tail", "-f", "/dev/null"];

/** How long a finished command's output may stay open (held by a background process) before berth stops waiting. */
const outputDrainMs = 1000;

/** The engine's answer to an exec whose working directory does not exist. */
const missingWorkdir = /chdir to cwd .* no such file or directory/;

/**
 * Creates the directories $2… that are missing and gives what it created to
 * user $1 (unless empty), so a job running as the image's own user can write
 * there. Run as root in the job container.
 */
const makeDirectoriesScript = `u=$1; shift
for d in "$@"; do
  top=$d first=
  while [ ! -d "$top" ]; do first=$top; top=$(dirname -- "$top"); done
  [ -n "$first" ] || continue
  mkdir -p -- "$d" || exit 1
  if [ -n "$u" ]; then chown -R -- "$u" "$first" || exit 1; fi
done`;

/**
 * One bridge network, one job container and one container per service for
 * every environment, on a Docker engine reached through dockerode.
 */
export class DockerDriver implements Driver<DockerEnvironment> {
  private readonly docker: Docker;
  private readonly where: string;
  private readonly images: EngineImages;
  private engine = { os: "Linux", arch: "X64" };
  private readonly oomKills = new OomKillCounts();

  constructor(
    private readonly options: DockerOptions,
    private readonly logger: Logger,
    private readonly instance: string,
  ) {
    ({ docker: this.docker, where: this.where } = connectToEngine(options));
    this.images = new EngineImages(this.docker, logger, options.dockerConfig);
  }

  async provision(): Promise<void> {
    try {
      await this.docker.ping();
      const info = (await this.docker.info()) as {
        OSType?: string;
        Architecture?: string;
        ServerVersion?: string;
      };
      this.engine = { os: runnerOs(info.OSType), arch: runnerArch(info.Architecture) };
      this.logger.info({ engine: this.where, version: info.ServerVersion }, "docker driver ready");
    } catch (err) {
      throw new BerthError(
        Status.UNAVAILABLE,
        `driver docker: provision: cannot reach the Docker engine at ${this.where}: ${engineMessage(err)}`,
        { cause: err },
      );
    }
  }

  capabilities(): DriverCapabilities {
    return {
      supportsServiceContainers: true,
      managesOwnNetworking: true,
      supportsDockerActions: false,
      supportsLocalCopy: false,
      globalLayout: containerLayout(this.engine),
      backendOptions: jobOptionKeys,
    };
  }

  async create(id: string, spec: EnvironmentSpec): Promise<CreatedEnvironment<DockerEnvironment>> {
    const job = parseJobOptions(spec.backendOptions, this.options);
    for (const service of spec.services) {
      if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(service.name)) {
        throw invalidArgument(
          `service name "${service.name}" is not usable as a host name: use letters, digits, "_", "." and "-"`,
        );
      }
    }
    const image = spec.image || spec.labelArg;
    if (!image) throw invalidArgument("the docker driver needs an image: set the job's container image");
    const objectLabels = environmentLabels(this.instance, id, new Date());
    const pullPolicy = spec.forcePull ? "always" : (job.pullPolicy ?? this.options.pullPolicy);
    const imageInfo = await this.images.ensure(image, pullPolicy, spec.platform);
    for (const service of spec.services) await this.images.ensure(service.image, pullPolicy, spec.platform);

    let network: string | undefined;
    if (job.networkMode === undefined) {
      network = `berth-${id}`;
      await this.docker
        .createNetwork({ Name: network, Driver: "bridge", Labels: objectLabels, CheckDuplicate: true })
        .catch((err: unknown) => {
          throw dockerError(err, `create network ${network}`);
        });
    }
    const serviceIds: DockerEnvironment["serviceIds"] = [];
    for (const service of spec.services) {
      const { exposed, bindings } = portBindings(service.ports, service.name);
      const container = await this.docker
        .createContainer({
          name: `berth-${id}-${service.name}`,
          Image: service.image,
          Env: keyValueEntries(service.env),
          Labels: { ...objectLabels, [labels.role]: `service:${service.name}` },
          ExposedPorts: exposed,
          HostConfig: { NetworkMode: network ?? job.networkMode, PortBindings: bindings },
          NetworkingConfig: network
            ? { EndpointsConfig: { [network]: { Aliases: [service.name] } } }
            : undefined,
          platform: spec.platform || undefined,
        })
        .catch((err: unknown) => {
          throw dockerError(err, `create service container ${service.name} (${service.image})`);
        });
      serviceIds.push({ name: service.name, id: container.id });
    }
    const container = await this.docker
      .createContainer({
        name: `berth-${id}`,
        Image: image,
        Entrypoint: keepAlive,
        Cmd: [],
        Env: keyValueEntries(spec.env),
        WorkingDir: spec.workingDir || undefined,
        Labels: { ...objectLabels, [labels.role]: "job" },
        HostConfig: {
          Init: this.options.init,
          NetworkMode: network ?? job.networkMode,
          CapAdd: spec.capAdd,
          CapDrop: spec.capDrop,
          Privileged: job.privileged,
          Memory: job.memoryBytes,
          NanoCpus: job.nanoCpus,
          Binds: job.binds,
        },
        platform: spec.platform || undefined,
      })
      .catch((err: unknown) => {
        throw dockerError(err, `create job container (${image})`);
      });
    const state: DockerEnvironment = {
      containerId: container.id,
      network,
      serviceIds,
      imageEnv: keyValueMap(imageInfo.Config?.Env ?? []),
      user: imageInfo.Config?.User ?? "",
    };
    return {
      state,
      layout: containerLayout({ os: runnerOs(imageInfo.Os), arch: runnerArch(imageInfo.Architecture) }),
    };
  }

  async start(
    ref: EnvironmentRef<DockerEnvironment>,
    progress: (line: string) => void,
    signal: AbortSignal,
  ): Promise<{ imageEnv: Record<string, string> }> {
    const env = ref.state;
    for (const service of env.serviceIds) {
      progress(`starting service ${service.name}`);
      await startContainer(this.docker.getContainer(service.id), `service ${service.name}`);
    }
    for (const service of env.serviceIds) await this.waitHealthy(service, progress, signal);
    progress("starting job container");
    const job = this.docker.getContainer(env.containerId);
    await startContainer(job, "job container");
    // The runner copies to act_path and runs in root_path at once: they exist before the first Exec.
    const { rootPath, actPath, toolCachePath, tempPath } = containerLayoutPaths;
    await this.makeDirectories(job, [rootPath, actPath, toolCachePath, tempPath], env.user ?? "");
    return { imageEnv: env.imageEnv };
  }

  async exec(
    ref: EnvironmentRef<DockerEnvironment>,
    spec: ExecSpec,
    sinks: ExecSinks,
    signal: AbortSignal,
  ): Promise<ExecResult> {
    const container = this.docker.getContainer(ref.state.containerId);
    const result = await this.runExec(ref, container, spec, sinks, signal);
    // The engine does not create an exec's working directory (only a container's, at start):
    // make it, as the user the command runs as, and try once more.
    if (result.kind !== "failed" || !missingWorkdir.test(result.message)) return result;
    try {
      await this.makeDirectories(container, [spec.workdir], spec.user || ref.state.user || "");
    } catch (err) {
      if (!(err instanceof BerthError) || err.code !== Status.FAILED_PRECONDITION) throw err;
      return { kind: "failed", message: `cannot use working directory ${spec.workdir}: ${err.message}` };
    }
    return this.runExec(ref, container, spec, sinks, signal);
  }

  private async runExec(
    ref: EnvironmentRef<DockerEnvironment>,
    container: Docker.Container,
    spec: ExecSpec,
    sinks: ExecSinks,
    signal: AbortSignal,
  ): Promise<ExecResult> {
    const marker = newExecMarker();
    const exec = await container
      .exec({
        Cmd: spec.command,
        Env: [...keyValueEntries(spec.env), marker],
        User: spec.user || undefined,
        WorkingDir: spec.workdir || undefined,
        AttachStdout: true,
        AttachStderr: true,
      })
      .catch((err: unknown) => {
        throw dockerError(err, "create exec in the job container");
      });
    const stream = await exec.start({ hijack: true, stdin: false }).catch((err: unknown) => {
      throw dockerError(err, "start exec in the job container");
    });

    let escalation: KillEscalation | undefined;
    const kill = () => {
      escalation = escalateKill(
        (stop) => signalMarked(this.runIn(container), stop, marker, this.logger),
        this.options.killGraceMs,
      );
    };
    signal.addEventListener("abort", kill, { once: true });
    // The stream ends when every holder of the output has gone; a background
    // process may hold it long after the command itself exited.
    let cutByBerth = false;
    let lost = false;
    let over = false;
    const finishedRunning = this.whenExecEnds(exec, () => over || signal.aborted).then(() =>
      delay(outputDrainMs),
    );
    void finishedRunning.then(() => {
      cutByBerth = true;
      stream.destroy();
    });
    try {
      let heldBack: string | undefined;
      let streamError: unknown;
      try {
        ({ heldBack } = await demuxExecOutput(stream, sinks));
      } catch (err) {
        if (!cutByBerth) streamError = err;
      }
      const end = await waitForExitCode(exec);
      if (signal.aborted) throw signal.reason;
      const cause = streamError ?? end.unreachable;
      if (end.running || cause !== undefined) {
        // The engine keeps the stream open until the command exits, so the
        // connection dropped: output may be lost and the outcome is unknown.
        // It is the runner's failed step now, so stop it.
        lost = true;
        kill();
        throw new BerthError(
          Status.UNAVAILABLE,
          `the connection to the Docker engine ${this.where} dropped while the command was running` +
            `${cause === undefined ? "" : ` (${engineMessage(cause)})`}; its outcome is unknown, so berth stops the command`,
        );
      }
      const exitCode = end.exitCode;
      if (heldBack !== undefined && (exitCode === 126 || exitCode === 127))
        return { kind: "failed", message: heldBack };
      release(heldBack, sinks.stdout);
      if (exitCode === null) {
        return { kind: "failed", message: "the Docker engine did not report an exit code for the command" };
      }
      return await this.oomKills.exited(ref.id, exitCode, () =>
        readOomKillCounter(this.runIn(container), this.logger),
      );
    } finally {
      over = true;
      if (!lost) escalation?.cancel();
      signal.removeEventListener("abort", kill);
      stream.destroy();
    }
  }

  async copyIn(
    ref: EnvironmentRef<DockerEnvironment>,
    destPath: string,
    tar: Readable,
    signal: AbortSignal,
  ): Promise<void> {
    // The request body is piped from the tar stream: if that fails (a refused
    // entry, possibly before the upload even starts), the request must be
    // aborted or it would wait for more body forever.
    const upload = new AbortController();
    tar.once("error", (err) => upload.abort(err));
    const aborted = AbortSignal.any([signal, upload.signal]);
    const container = this.docker.getContainer(ref.state.containerId);
    await this.ensureDirectory(container, destPath);
    aborted.throwIfAborted();
    await container.putArchive(tar, { path: destPath, abortSignal: aborted }).catch((err: unknown) => {
      throw aborted.aborted ? aborted.reason : dockerError(err, `copy into ${destPath}`);
    });
  }

  async copyOut(ref: EnvironmentRef<DockerEnvironment>, srcPath: string): Promise<Readable> {
    const container = this.docker.getContainer(ref.state.containerId);
    try {
      return (await container.getArchive({ path: srcPath })) as Readable;
    } catch (err) {
      if (isNotFound(err)) throw missingPath(`${srcPath} does not exist in the job container`);
      throw dockerError(err, `copy out ${srcPath}`);
    }
  }

  readFile(
    ref: EnvironmentRef<DockerEnvironment>,
    path: string,
    maxBytes: number,
  ): Promise<Buffer | undefined> {
    return readFileThroughCopyOut(() => this.copyOut(ref, path), maxBytes);
  }

  async health(ref: EnvironmentRef<DockerEnvironment>): Promise<{ waitMs: number }> {
    const env = ref.state;
    let waitMs = 0;
    for (const { name, id } of [
      { name: "job container", id: env.containerId },
      ...env.serviceIds.map((s) => ({ name: `service ${s.name}`, id: s.id })),
    ]) {
      const info = await this.docker
        .getContainer(id)
        .inspect()
        .catch((err: unknown) => {
          throw dockerError(err, `inspect ${name}`);
        });
      const state = info.State;
      if (!state.Running) {
        throw failedPrecondition(
          `${name} is ${state.Status} (exit code ${state.ExitCode}${state.OOMKilled ? ", killed for running out of memory" : ""})`,
        );
      }
      const health = (state as { Health?: { Status: string; Log?: { Output: string }[] } }).Health;
      if (health?.Status === "starting") waitMs = 1000;
      if (health?.Status === "unhealthy")
        throw failedPrecondition(`${name} is unhealthy: ${lastHealthOutput(health)}`);
    }
    return { waitMs };
  }

  async adopt(ref: EnvironmentRef<DockerEnvironment>): Promise<boolean> {
    try {
      await this.docker.getContainer(ref.state.containerId).inspect();
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw dockerError(err, `inspect environment ${ref.id}'s job container`);
    }
  }

  async listManaged(): Promise<ManagedEnvironment<DockerEnvironment>[]> {
    const filters = JSON.stringify({ label: [`${labels.instance}=${this.instance}`] });
    const [containers, networks] = await Promise.all([
      this.docker.listContainers({ all: true, filters }),
      this.docker.listNetworks({ filters }),
    ]).catch((err: unknown) => {
      throw dockerError(err, "list berth's containers and networks");
    });
    const found = new Map<string, ManagedEnvironment<DockerEnvironment>>();
    for (const objectLabels of [...containers, ...networks].map((object) => object.Labels ?? {})) {
      const id = objectLabels[labels.environment];
      if (!id) continue;
      const created = createdAt(objectLabels);
      const known = found.get(id);
      if (!known) found.set(id, { id, createdAt: created, state: undefined });
      else if (created && (!known.createdAt || created < known.createdAt)) known.createdAt = created;
    }
    // Remove finds everything by the environment label: no state needed.
    return [...found.values()];
  }

  async remove(ref: EnvironmentRef<DockerEnvironment | undefined>): Promise<void> {
    this.oomKills.forget(ref.id);
    const filters = JSON.stringify({ label: [`${labels.environment}=${ref.id}`] });
    const problems: string[] = [];
    const attempt = async (what: string, action: () => Promise<unknown>) => {
      try {
        await action();
      } catch (err) {
        if (!isNotFound(err)) problems.push(`${what}: ${engineMessage(err)}`);
      }
    };
    const containers = await this.docker.listContainers({ all: true, filters }).catch((err: unknown) => {
      throw dockerError(err, "list the environment's containers");
    });
    await Promise.all(
      containers.map((c) =>
        attempt(`container ${c.Names[0] ?? c.Id}`, () =>
          this.docker.getContainer(c.Id).remove({ force: true, v: true }),
        ),
      ),
    );
    const networks = await this.docker.listNetworks({ filters }).catch((err: unknown) => {
      throw dockerError(err, "list the environment's networks");
    });
    for (const n of networks) await attempt(`network ${n.Name}`, () => this.docker.getNetwork(n.Id).remove());
    const { Volumes: volumes } = await this.docker.listVolumes({ filters }).catch((err: unknown) => {
      throw dockerError(err, "list the environment's volumes");
    });
    for (const v of volumes ?? [])
      await attempt(`volume ${v.Name}`, () => this.docker.getVolume(v.Name).remove());
    if (problems.length > 0) {
      throw new BerthError(
        Status.UNAVAILABLE,
        `could not remove everything of environment ${ref.id}: ${problems.join("; ")}`,
      );
    }
  }

  async cleanup(): Promise<void> {
    // dockerode keeps no connections open between requests.
  }

  private async waitHealthy(
    service: { name: string; id: string },
    progress: (line: string) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const container = this.docker.getContainer(service.id);
    const deadline = Date.now() + this.options.serviceHealthTimeoutMs;
    let announced = false;
    for (;;) {
      const info = await container.inspect().catch((err: unknown) => {
        throw dockerError(err, `inspect service ${service.name}`);
      });
      const health = (info.State as { Health?: { Status: string; Log?: { Output: string }[] } }).Health;
      if (!info.State.Running) {
        throw failedPrecondition(
          `service ${service.name} exited with code ${info.State.ExitCode} while starting`,
        );
      }
      if (!health || health.Status === "healthy") {
        if (health) progress(`service ${service.name} is healthy`);
        return;
      }
      if (health.Status === "unhealthy") {
        throw failedPrecondition(`service ${service.name} is unhealthy: ${lastHealthOutput(health)}`);
      }
      if (Date.now() > deadline) {
        throw failedPrecondition(
          `service ${service.name} did not become healthy within ${this.options.serviceHealthTimeoutMs} ms; last health check said: ${lastHealthOutput(health)}`,
        );
      }
      if (!announced) progress(`waiting for service ${service.name} to become healthy`);
      announced = true;
      await delay(500);
      signal.throwIfAborted();
    }
  }

  /**
   * Creates destPath (and missing parents) in the container. Only the missing
   * part is extracted, under the deepest existing ancestor, so existing
   * symlinks such as /var/run -> /run are followed, not replaced.
   */
  private async ensureDirectory(container: Docker.Container, destPath: string): Promise<void> {
    const missing: string[] = [];
    let existing = posix.normalize(destPath);
    while (existing !== "/") {
      try {
        // Resolves with the (empty) response stream: read it, or its socket stays busy for good.
        const response = (await container.infoArchive({ path: existing })) as Readable;
        response.resume();
        break;
      } catch (err) {
        if (!isNotFound(err)) throw dockerError(err, `check ${existing} in the job container`);
        missing.unshift(posix.basename(existing));
        existing = posix.dirname(existing);
      }
    }
    if (missing.length === 0) return;
    const archive = pack();
    for (let depth = 1; depth <= missing.length; depth++) {
      archive.entry({ name: `${missing.slice(0, depth).join("/")}/`, type: "directory", mode: 0o755 });
    }
    archive.finalize();
    await container.putArchive(archive as unknown as Readable, { path: existing }).catch((err: unknown) => {
      throw dockerError(err, `create ${destPath} in the job container`);
    });
  }

  /** makeDirectoriesScript in the job container, as root; FAILED_PRECONDITION with its stderr if it fails. */
  private async makeDirectories(container: Docker.Container, dirs: string[], user: string): Promise<void> {
    const errors = new CollectingWritable(4096);
    const exitCode = await this.runIn(container)(
      ["sh", "-c", makeDirectoriesScript, "berth-mkdir", user, ...dirs],
      { stderr: errors },
      AbortSignal.timeout(30_000),
    );
    if (exitCode !== 0) {
      throw failedPrecondition(
        `cannot create ${dirs.join(", ")} in the job container (the image needs sh, mkdir, dirname and chown): ${errors.text().trim() || `exit code ${exitCode}`}`,
      );
    }
  }

  /**
   * Runs berth's own commands in the container as root. Right after a
   * dropped connection a pooled one may still fail once: tried again on a
   * new one.
   */
  private runIn(container: Docker.Container): RunInJobContainer {
    return async (argv, output) => {
      for (let attempt = 1; ; attempt++) {
        try {
          const exec = await container.exec({ Cmd: argv, User: "0", AttachStdout: true, AttachStderr: true });
          await demuxExecOutput(await exec.start({ hijack: true, stdin: false }), {
            stdout: output.stdout ?? new CollectingWritable(0),
            stderr: output.stderr ?? new CollectingWritable(0),
          });
          const end = await waitForExitCode(exec);
          if (end.exitCode !== null) return end.exitCode;
          if (end.unreachable !== undefined) throw end.unreachable as Error;
          throw unavailable("the Docker engine did not report the command's exit code");
        } catch (err) {
          if (isConnectionError(err) && attempt < 3) {
            await delay(200 * attempt);
            continue;
          }
          throw dockerError(err, `run ${argv[0]} in the job container`);
        }
      }
    };
  }

  /** Resolves once the exec's main process has exited (or the call is cancelled). */
  private async whenExecEnds(exec: Docker.Exec, stopLooking: () => boolean): Promise<void> {
    for (;;) {
      await delay(1000);
      if (stopLooking()) return;
      // A failed look (the engine briefly unreachable) proves nothing: look again.
      const info = await exec.inspect().catch(() => ({ Running: true }));
      if (!info.Running) return;
    }
  }
}

async function startContainer(container: Docker.Container, what: string): Promise<void> {
  try {
    await container.start();
  } catch (err) {
    // 304: already started (a retried Start).
    if ((err as { statusCode?: number }).statusCode !== 304) throw dockerError(err, `start ${what}`);
  }
}

/**
 * The exit code once the engine has it (it can lag the end of the output
 * stream a little). `running` still true after that means it never came;
 * `unreachable` is why the engine could not be asked (a pooled connection
 * that was cut fails once and is replaced, so each look is tried again).
 */
async function waitForExitCode(
  exec: Docker.Exec,
): Promise<{ exitCode: number | null; running: boolean; unreachable?: unknown }> {
  let unreachable: unknown;
  for (let attempt = 0; attempt < 40; attempt++) {
    if (attempt > 0) await delay(50);
    try {
      const info = await exec.inspect();
      if (!info.Running) return { exitCode: info.ExitCode, running: false };
      unreachable = undefined;
    } catch (err) {
      if (!isConnectionError(err)) throw dockerError(err, "inspect exec");
      unreachable = err;
    }
  }
  return { exitCode: null, running: unreachable === undefined, unreachable };
}

function lastHealthOutput(health: { Log?: { Output: string }[] }): string {
  return health.Log?.at(-1)?.Output.trim() || "(no output)";
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
