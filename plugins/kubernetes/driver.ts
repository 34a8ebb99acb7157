import { setTimeout as delay } from "node:timers/promises";
import { randomUUID } from "node:crypto";
import { posix } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
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
import { BerthError, failedPrecondition, missingPath } from "../../src/errors.js";
import { keyValueEntries, keyValueMap } from "../../src/key-value.js";
import { type RunInJobContainer, readOomKillCounter, signalMarked } from "../kit/container-commands.js";
import { containerLayout, containerLayoutPaths } from "../kit/container-layout.js";
import { execMarkerVariable, newExecMarker } from "../kit/exec-marker.js";
import { OomKillCounts } from "../kit/exec-outcome.js";
import { type KillEscalation, type StopSignal, escalateKill } from "../kit/kill-escalation.js";
import { createdAt, labels } from "../kit/labels.js";
import { CollectingWritable, PrefixCapture } from "../kit/output-capture.js";
import { readFileThroughCopyOut } from "../kit/tar-read.js";
import {
  checkPermissions,
  findOwner,
  type JobPodOwner,
  loadKubeConfig,
  readServerVersion,
} from "./cluster.js";
import { type ExecEnd, type ExecSession, type ExecStreams, openExec } from "./exec-socket.js";
import { isNotFound, kubernetesError } from "./errors.js";
import type { KubernetesEnvironment } from "./state.js";
import { jobOptionKeys, parseJobOptions } from "./job-options.js";
import type { KubernetesOptions } from "./options.js";
import {
  buildPod,
  deadlineSeconds,
  extraServiceHostNames,
  jobContainerName,
  serviceHostName,
} from "./pod.js";
import { judgePod } from "./pod-status.js";
import { type PodTemplate, loadPodTemplate } from "./pod-template.js";
import { PodWatcher } from "./pod-watch.js";
import {
  addHostsScript,
  copyInScript,
  copyInStatusScript,
  copyOutMissing,
  copyOutScript,
  execWrapper,
} from "./scripts.js";

/** Most stderr berth keeps from its own helper commands for error messages. */
const helperStderrBytes = 8192;
/** How long the pod's status is watched for an OOMKilled job container: 5 s, past the kubelet's status period. */
const oomStatusLooks = 20;
const oomStatusIntervalMs = 250;

/**
 * A pod per job, through the Kubernetes API: exec over WebSocket, copies
 * through tar in the job container, Start watching the pod and its events.
 */
export class KubernetesDriver implements Driver<KubernetesEnvironment> {
  private readonly kubeConfig = new KubeConfig();
  private core!: CoreV1Api;
  private namespace = "default";
  private template: PodTemplate = { metadata: {}, spec: { containers: [] } };
  private nativeSidecars = false;
  private platform = { os: "Linux", arch: "X64" };
  private owner?: JobPodOwner;
  private readonly podWatcher: PodWatcher;
  private readonly oomKills = new OomKillCounts();

  constructor(
    private readonly options: KubernetesOptions,
    private readonly logger: Logger,
    private readonly instance: string,
  ) {
    this.podWatcher = new PodWatcher(this.kubeConfig, options, logger);
  }

  async provision(): Promise<void> {
    const { source, namespace } = loadKubeConfig(this.kubeConfig, this.options);
    this.namespace = namespace;
    this.core = this.kubeConfig.makeApiClient(CoreV1Api);
    const server = this.kubeConfig.getCurrentCluster()?.server ?? "(no server)";
    const version = await readServerVersion(this.kubeConfig, server, source);
    this.nativeSidecars = version.nativeSidecars;
    this.platform = version.platform;
    await checkPermissions(this.kubeConfig, this.namespace);
    if (this.options.podTemplate) this.template = await loadPodTemplate(this.options.podTemplate);
    if (this.options.ownerReferences) this.owner = await findOwner(this.core, this.namespace, this.logger);
    this.logger.info(
      {
        server,
        version: version.gitVersion,
        namespace: this.namespace,
        services: this.nativeSidecars ? "native sidecars" : "plain containers",
      },
      "kubernetes driver ready",
    );
  }

  capabilities(): DriverCapabilities {
    return {
      supportsServiceContainers: true,
      managesOwnNetworking: true,
      supportsDockerActions: false,
      supportsLocalCopy: false,
      globalLayout: containerLayout(this.platform),
      backendOptions: jobOptionKeys,
    };
  }

  async create(id: string, spec: EnvironmentSpec): Promise<CreatedEnvironment<KubernetesEnvironment>> {
    const job = parseJobOptions(spec.backendOptions, { ...this.options, namespace: this.namespace });
    const namespace = job.namespace ?? this.namespace;
    const owner = this.owner?.namespace === namespace ? this.owner : undefined;
    const pod = buildPod({
      id,
      instance: this.instance,
      namespace,
      spec,
      job,
      template: this.template,
      activeDeadlineSeconds: deadlineSeconds(spec.timeoutMs, this.options.activeDeadlineSeconds),
      nativeSidecars: this.nativeSidecars,
      owner: owner && { apiVersion: owner.apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid },
      now: new Date(),
    });
    await this.core.createNamespacedPod({ namespace, body: pod }).catch((err: unknown) => {
      throw kubernetesError(err, `create pod ${id} in namespace ${namespace}`);
    });
    const extraHosts = extraServiceHostNames(spec.services);
    const state: KubernetesEnvironment = {
      namespace,
      pod: id,
      ...(extraHosts.length > 0 ? { extraHosts } : {}),
    };
    return { state, layout: containerLayout(this.platform) };
  }

  async start(
    ref: EnvironmentRef<KubernetesEnvironment>,
    progress: (line: string) => void,
    signal: AbortSignal,
  ): Promise<{ imageEnv: Record<string, string> }> {
    const env = ref.state;
    await this.podWatcher.waitUntilReady(env, progress, signal);
    progress("all containers are running and ready");
    if (env.extraHosts) await this.addServiceHosts(env, progress, signal);
    const environ = new CollectingWritable(1024 * 1024);
    const end = await this.runHelper(env, ["cat", "/proc/1/environ"], { stdout: environ }, signal);
    if (end.kind !== "exited" || end.exitCode !== 0) {
      throw failedPrecondition(`cannot read the job container's environment: ${describeEnd(end)}`);
    }
    return { imageEnv: parseEnviron(environ.text()) };
  }

  async exec(
    ref: EnvironmentRef<KubernetesEnvironment>,
    spec: ExecSpec,
    sinks: ExecSinks,
    signal: AbortSignal,
  ): Promise<ExecResult> {
    const env = ref.state;
    const marker = newExecMarker();
    const failurePrefix = `berth-exec-failed:${randomUUID()}: `;
    const entries = [...keyValueEntries(spec.env), marker];
    const exported = entries.filter((entry) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(entry));
    const viaEnv = entries.filter((entry) => !exported.includes(entry));
    const stderr = new PrefixCapture(sinks.stderr, failurePrefix);
    const command = [
      "sh",
      "-c",
      execWrapper,
      "berth-exec",
      failurePrefix,
      spec.workdir,
      spec.user,
      String(exported.length),
      ...exported,
      String(viaEnv.length),
      ...viaEnv,
      ...spec.command,
    ];
    // After a cancel the connection stays open until the killed command's
    // status arrives (or, if killing fails, a little longer than the grace).
    const session = await this.openJobExec(env, command, { stdout: sinks.stdout, stderr }, signal);
    let escalation: KillEscalation | undefined;
    let giveUp: NodeJS.Timeout | undefined;
    const stop = () =>
      escalateKill((stopSignal) => this.signalMarked(env, stopSignal, marker), this.options.killGraceMs);
    const kill = () => {
      escalation = stop();
      giveUp = setTimeout(() => session.close(), this.options.killGraceMs + 10_000);
    };
    if (signal.aborted) kill();
    else signal.addEventListener("abort", kill, { once: true });
    try {
      const end = await session.ended.catch((err: unknown) => {
        // The connection dropped: the outcome is unknown, and the command may
        // still run in the pod. It is the runner's failed step now, so stop it.
        if (!signal.aborted) stop();
        throw err;
      });
      signal.throwIfAborted();
      const failure = stderr.failure();
      if (failure !== undefined && end.kind === "exited" && end.exitCode === 127) {
        return { kind: "failed", message: failure };
      }
      stderr.release();
      if (end.kind === "error") return { kind: "failed", message: end.message };
      return await this.oomKills.exited(
        ref.id,
        end.exitCode,
        () => readOomKillCounter(this.runIn(env), this.logger),
        () => this.jobContainerOomKilled(env),
      );
    } finally {
      escalation?.cancel();
      clearTimeout(giveUp);
      signal.removeEventListener("abort", kill);
    }
  }

  async copyIn(
    ref: EnvironmentRef<KubernetesEnvironment>,
    destPath: string,
    tar: Readable,
    signal: AbortSignal,
  ): Promise<void> {
    const env = ref.state;
    const statusFile = `${containerLayoutPaths.tempPath}/.berth-copy-in-${randomUUID()}`;
    const extract = await this.openJobExec(
      env,
      ["sh", "-c", copyInScript, "berth-copy-in", destPath, statusFile],
      { stdin: tar },
      signal,
    );
    let inputError: Error | undefined;
    try {
      await extract.inputSent;
    } catch (err) {
      inputError = err instanceof Error ? err : new Error(String(err));
    }
    // Before v5 (Kubernetes 1.30) the only way to end the input is to close
    // the connection, which loses the exit status: the command writes it to a
    // file, and a second exec waits for that file.
    if (extract.inputClosable && inputError === undefined) await extract.ended.catch(() => undefined);
    extract.close();
    const errors = new CollectingWritable(helperStderrBytes);
    const end = await this.runHelper(
      env,
      ["sh", "-c", copyInStatusScript, "berth-copy-in-status", statusFile],
      { stderr: errors },
      signal,
    );
    if (inputError !== undefined) throw inputError;
    if (end.kind === "exited" && end.exitCode === 0) return;
    throw helperFailure(`copy into ${destPath}`, end, errors.text());
  }

  async copyOut(
    ref: EnvironmentRef<KubernetesEnvironment>,
    srcPath: string,
    signal: AbortSignal,
  ): Promise<Readable> {
    const env = ref.state;
    const path = posix.normalize(srcPath).replace(/(.)\/+$/, "$1");
    const [directory, base] = path === "/" ? ["/", "."] : [posix.dirname(path), posix.basename(path)];
    const output = new PassThrough({ highWaterMark: 1024 * 1024 });
    const errors = new CollectingWritable(helperStderrBytes);
    const session = await this.openJobExec(
      env,
      ["sh", "-c", copyOutScript, "berth-copy-out", directory, base],
      { stdout: output, stderr: errors },
      signal,
    );
    let over = false;
    const settled = session.ended.then((end) => {
      over = true;
      if (end.kind === "exited" && end.exitCode === copyOutMissing)
        throw missingPath(`${srcPath} does not exist in the job container`);
      if (end.kind !== "exited" || end.exitCode !== 0)
        throw helperFailure(`copy out ${srcPath}`, end, errors.text());
    });
    // A reader that goes away early (the runner reads an env file's first entry and cancels)
    // ends the exec: its tar would otherwise wait for good on a connection nobody reads.
    const abandon = () => !over && session.abandon();
    signal.addEventListener("abort", abandon, { once: true });
    output.once("close", () => {
      signal.removeEventListener("abort", abandon);
      abandon();
    });
    // NOT_FOUND must be the RPC's answer, not a broken stream: wait for the
    // first byte of the archive or the end, whichever comes first.
    const firstByte = new Promise<void>((resolve) => output.once("readable", resolve));
    await Promise.race([firstByte, settled]);
    settled.then(
      () => output.end(),
      (err: unknown) => output.destroy(err as Error),
    );
    return output;
  }

  async readFile(
    ref: EnvironmentRef<KubernetesEnvironment>,
    path: string,
    maxBytes: number,
    signal: AbortSignal,
  ): Promise<Buffer | undefined> {
    return readFileThroughCopyOut(() => this.copyOut(ref, path, signal), maxBytes);
  }

  async health(ref: EnvironmentRef<KubernetesEnvironment>): Promise<{ waitMs: number }> {
    const env = ref.state;
    const pod = await this.core
      .readNamespacedPod({ name: env.pod, namespace: env.namespace })
      .catch((err: unknown) => {
        throw kubernetesError(err, `read pod ${env.pod}`);
      });
    const verdict = judgePod(pod);
    if (verdict.state === "failed") throw failedPrecondition(`pod ${env.pod}: ${verdict.reason}`);
    const restarted = [
      ...(pod.status?.containerStatuses ?? []),
      ...(pod.status?.initContainerStatuses ?? []),
    ].find((c) => c.restartCount > 0);
    if (restarted) {
      const last = restarted.lastState?.terminated;
      throw failedPrecondition(
        `pod ${env.pod}: container ${restarted.name} restarted ${restarted.restartCount} time(s)` +
          (last ? ` (last: ${last.reason ?? "terminated"}, exit code ${last.exitCode})` : ""),
      );
    }
    return { waitMs: verdict.state === "ready" ? 0 : 1000 };
  }

  async remove(ref: EnvironmentRef<KubernetesEnvironment | undefined>): Promise<void> {
    this.oomKills.forget(ref.id);
    if (ref.state) return this.removePod(ref.state);
    // No state (a Create that failed after the pod was made): find its pod by label.
    for (const found of await this.listManaged()) {
      if (found.id === ref.id && found.state) await this.removePod(found.state);
    }
  }

  private async removePod(env: KubernetesEnvironment): Promise<void> {
    try {
      await this.core.deleteNamespacedPod({
        name: env.pod,
        namespace: env.namespace,
        gracePeriodSeconds: this.options.removeGraceSeconds,
      });
    } catch (err) {
      if (isNotFound(err)) return;
      throw kubernetesError(err, `delete pod ${env.pod}`);
    }
    await this.podWatcher.waitUntilGone(this.core, env);
  }

  async adopt(ref: EnvironmentRef<KubernetesEnvironment>): Promise<boolean> {
    const env = ref.state;
    try {
      const pod = await this.core.readNamespacedPod({ name: env.pod, namespace: env.namespace });
      return pod.metadata?.deletionTimestamp === undefined;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw kubernetesError(err, `read pod ${env.pod}`);
    }
  }

  async listManaged(): Promise<ManagedEnvironment<KubernetesEnvironment>[]> {
    const found: ManagedEnvironment<KubernetesEnvironment>[] = [];
    for (const namespace of new Set([this.namespace, ...this.options.allowedNamespaces])) {
      const pods = await this.core
        .listNamespacedPod({ namespace, labelSelector: `${labels.instance}=${this.instance}` })
        .catch((err: unknown) => {
          throw kubernetesError(err, `list berth's pods in namespace ${namespace}`);
        });
      for (const pod of pods.items) {
        const id = pod.metadata?.labels?.[labels.environment];
        const name = pod.metadata?.name;
        if (!id || !name) continue;
        const state: KubernetesEnvironment = { namespace, pod: name };
        found.push({ id, createdAt: createdAt(pod.metadata?.labels), state });
      }
    }
    return found;
  }

  async cleanup(): Promise<void> {
    this.podWatcher.stopAll();
  }

  /** Opens an exec of `command` in the job container. */
  private openJobExec(
    env: KubernetesEnvironment,
    command: string[],
    streams: ExecStreams,
    signal: AbortSignal,
  ): Promise<ExecSession> {
    return openExec(
      this.kubeConfig,
      { namespace: env.namespace, pod: env.pod, container: jobContainerName, command },
      streams,
      { signal, keepaliveMs: this.options.execKeepaliveMs },
    );
  }

  /** Runs one of berth's own commands in the job container and waits for its end. */
  private async runHelper(
    env: KubernetesEnvironment,
    command: string[],
    streams: ExecStreams,
    signal: AbortSignal,
  ): Promise<ExecEnd> {
    const session = await this.openJobExec(env, command, streams, signal);
    const abort = () => session.close();
    signal.addEventListener("abort", abort, { once: true });
    try {
      return await session.ended;
    } finally {
      signal.removeEventListener("abort", abort);
    }
  }

  /** Makes services whose names are no host names (my_db) reachable by them in the job container. */
  private async addServiceHosts(
    env: KubernetesEnvironment,
    progress: (line: string) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const names = env.extraHosts ?? [];
    const errors = new CollectingWritable(helperStderrBytes);
    const end = await this.runHelper(
      env,
      ["sh", "-c", addHostsScript, "berth-hosts", ...names],
      { stderr: errors },
      signal,
    );
    if (end.kind === "exited" && end.exitCode === 0) return;
    progress(
      `berth: services ${names.join(", ")} are reachable only as ${names.map(serviceHostName).join(", ")}: the job container could not add their names to /etc/hosts (${errors.text().trim() || describeEnd(end)})`,
    );
  }

  /**
   * Whether the job container itself was ended by the OOM killer. An OOM
   * kill sometimes takes the whole container (the command ends with 137, the
   * counter's reader finds "container not running"; seen in 1 of 6 to 16
   * runs of the OOM test on Kubernetes 1.20, also with the hog's
   * oom_score_adj at 1000, so why is not known yet); the kubelet then says
   * OOMKilled in the pod's status within its status period (about a
   * second). berth's pods do not restart (restartPolicy Never), so the
   * environment's later calls fail, and its health says why. Looked at only
   * after an exit of 137 whose counter could not be read.
   */
  private async jobContainerOomKilled(env: KubernetesEnvironment): Promise<boolean> {
    for (let look = 0; look < oomStatusLooks; look++) {
      const pod = await this.core
        .readNamespacedPod({ name: env.pod, namespace: env.namespace })
        .catch(() => undefined);
      const job = pod?.status?.containerStatuses?.find((status) => status.name === jobContainerName);
      const reasons = [job?.state?.terminated?.reason, job?.lastState?.terminated?.reason];
      if (reasons.includes("OOMKilled")) return true;
      if (job?.state?.terminated || (job?.restartCount ?? 0) > 0) return false;
      await delay(oomStatusIntervalMs);
    }
    return false;
  }

  /** Runs berth's own commands in the job container. */
  private runIn(env: KubernetesEnvironment): RunInJobContainer {
    return async (argv, output, signal) => {
      const end = await this.runHelper(env, argv, output, signal);
      if (end.kind !== "exited") throw helperFailure(`run ${argv[0]}`, end, "");
      return end.exitCode;
    };
  }

  private signalMarked(env: KubernetesEnvironment, signal: StopSignal, marker: string): Promise<void> {
    return signalMarked(this.runIn(env), signal, marker, this.logger.child({ pod: env.pod }));
  }
}

function helperFailure(doing: string, end: ExecEnd, stderr: string): BerthError {
  const detail = stderr.trim() || describeEnd(end);
  if (
    end.kind === "exited" &&
    end.exitCode === 127 &&
    /tar: not found|tar: command not found|not found/.test(detail)
  ) {
    return failedPrecondition(
      `${doing}: the job image has no tar, which copies into and out of pods need (${detail})`,
    );
  }
  return failedPrecondition(`${doing} failed: ${detail}`);
}

function describeEnd(end: ExecEnd): string {
  return end.kind === "exited" ? `exit code ${end.exitCode}` : end.message;
}

function parseEnviron(text: string): Record<string, string> {
  return keyValueMap(text.split("\0").filter((entry) => !entry.startsWith(`${execMarkerVariable}=`)));
}
