import { randomBytes } from "node:crypto";
import { posix } from "node:path";
import { Readable, Writable } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import type {
  Driver,
  DriverCapabilities,
  EnvironmentRef,
  EnvironmentSpec,
  ExecResult,
  ExecSpec,
  Layout,
  SavedState,
} from "./driver.js";
import { EnvironmentSlots } from "./environment-slots.js";
import { checkEnv, checkExecSpec, redactError, redactResult } from "./exec-request.js";
import { parseEnvFile, maxEnvFileBytes } from "./env-file.js";
import { BerthError, Status, invalidArgument, messageOf, notFound } from "./errors.js";
import { EventChannel } from "./event-channel.js";
import { checkedTar } from "./tar-safety.js";
import type { BackendLimits, LimitedRpc } from "./backend-limits.js";
import type { ExecOutcome, Metrics } from "./metrics.js";
import type { EnvironmentRecord } from "./state-store.js";

/** A named driver instance: what a listener serves. */
export interface Backend {
  name: string;
  driver: Driver;
  /** The format of its driver's saved state: records carry its version. */
  savedState: SavedState<unknown>;
  limits: BackendLimits;
  /** Refuse backend_options the driver does not know, instead of ignoring them with a warning. */
  strictBackendOptions: boolean;
}

/** One piece of Exec output, or how the command ended. */
export type ExecEvent =
  { type: "output"; stream: "stdout" | "stderr"; data: Buffer } | { type: "result"; result: ExecResult };

/** A line of Start progress, or the image's env once the environment runs. */
export type StartEvent =
  { type: "progress"; line: string } | { type: "started"; imageEnv: Record<string, string> };

/** One message of a CopyIn stream, whatever generation it came in. */
export interface CopyInPart {
  environmentId?: string;
  destPath?: string;
  data: Uint8Array;
}

/**
 * Exec output and CopyOut messages carry at most this much (as runners send CopyIn). Output that piles
 * up while a message is in flight goes out together, so a fast command is not
 * slowed to one message per pipe read; runners accept up to 32 MiB.
 */
export const maxMessageBytes = 256 * 1024;

/** A call running on an environment: Remove aborts it and waits until it is over. */
interface Operation {
  controller: AbortController;
  over: Promise<void>;
}

interface Environment {
  ref: EnvironmentRef;
  backend: Backend;
  /** Its layout, for resolving relative workdirs; unknown for records of older berths. */
  layout?: Layout;
  /** Where a command runs when its Exec names no workdir (Create's working_dir, else root_path). */
  workdir: string;
  createdAt: Date;
  /** When its environment_timeout ends, if the runner set one. */
  deadlineAt?: Date;
  deadline?: NodeJS.Timeout;
  /** Calls in flight. They overlap freely; only Remove waits for (and aborts) them. */
  inFlight: Set<Operation>;
  /** Set once a Remove began: new calls get NOT_FOUND, a second Remove waits for the same. */
  removing?: Promise<void>;
  /** backend_options the driver does not know, ignored (said once more at Start). */
  ignoredOptions: string[];
}

/**
 * The protocol-agnostic core: both protocol adapters call this, and it routes
 * each environment id to the backend that created it, tracks the calls on
 * each environment, and holds what is common to every driver (request
 * checks, workdir resolution, env-file parsing, tar safety).
 */
export class EnvironmentService {
  private readonly environments = new Map<string, Environment>();
  private readonly slots: EnvironmentSlots;
  /** Ids whose Create is under way: they have resources but no record yet. */
  private readonly creating = new Set<string>();
  private removedListeners: ((backend: Backend) => void)[] = [];

  /**
   * `persist` durably records the environments that exist (the state store);
   * Create answers only once its environment is on record.
   */
  constructor(
    private readonly logger: Logger,
    private readonly metrics: Metrics,
    private readonly persist: (records: EnvironmentRecord[]) => Promise<void> = async () => {},
  ) {
    this.slots = new EnvironmentSlots(metrics);
  }

  capabilities(backend: Backend): DriverCapabilities {
    return backend.driver.capabilities();
  }

  async create(
    backend: Backend,
    spec: EnvironmentSpec,
    signal: AbortSignal,
  ): Promise<{ id: string; layout: Layout }> {
    const id = `berth-${randomBytes(8).toString("hex")}`;
    const log = this.logger.child({ environmentId: id, backend: backend.name });
    if (spec.timeoutMs !== undefined && spec.timeoutMs < 0) {
      throw new BerthError(
        Status.DEADLINE_EXCEEDED,
        `the environment's timeout is ${spec.timeoutMs / 1000} s: the job's deadline passed before its environment could be created`,
      );
    }
    checkEnv(spec.env, "Create's env");
    const { known, ignored } = this.splitBackendOptions(backend, spec.backendOptions, log);
    await this.slots.take(backend, signal, log);
    this.creating.add(id);
    let created;
    try {
      created = await withDeadline(backend, "create", signal, (opSignal) =>
        backend.driver.create(id, { ...spec, backendOptions: known }, opSignal),
      );
    } catch (err) {
      this.release(backend);
      // A half-created environment must not leak: let the driver clean up what it made.
      await backend.driver.remove({ id, state: undefined }).catch((cleanupErr: unknown) => {
        log.warn({ err: messageOf(cleanupErr) }, "cleanup after a failed create failed");
      });
      throw err;
    } finally {
      this.creating.delete(id);
    }
    const createdAt = new Date();
    this.register(backend, {
      ref: { id, state: created.state },
      layout: created.layout,
      workdir: spec.workingDir || created.layout.rootPath,
      createdAt,
      deadlineAt:
        spec.timeoutMs !== undefined && spec.timeoutMs > 0
          ? new Date(createdAt.getTime() + spec.timeoutMs)
          : undefined,
      ignoredOptions: ignored,
    });
    try {
      await this.persist(this.records());
    } catch (err) {
      // An environment berth cannot find again after a restart would be taken for an orphan there.
      await this.remove(id).catch(() => undefined);
      throw new BerthError(
        Status.UNAVAILABLE,
        `cannot record the new environment in berth's state directory, so it was removed again: ${messageOf(err)}`,
      );
    }
    log.info({ image: spec.image || spec.labelArg }, "environment created");
    return { id, layout: created.layout };
  }

  /**
   * The backend_options the driver knows, and the names of those it does not:
   * refused if the backend is strict, else ignored with a warning (runners
   * add keys of their own, and a refusal would fail every job).
   */
  private splitBackendOptions(
    backend: Backend,
    options: Record<string, string>,
    log: Logger,
  ): { known: Record<string, string>; ignored: string[] } {
    const knownNames = new Set(backend.driver.capabilities().backendOptions);
    const known: Record<string, string> = {};
    const ignored: string[] = [];
    for (const [key, value] of Object.entries(options)) {
      if (knownNames.has(key)) known[key] = value;
      else ignored.push(key);
    }
    if (ignored.length === 0) return { known, ignored };
    const names = ignored.map((key) => `"${key}"`).join(", ");
    const knownList = [...knownNames].join(", ") || "none";
    if (backend.strictBackendOptions) {
      throw invalidArgument(
        `unknown backend_options ${names} for backend ${backend.name} (strictBackendOptions is on); known: ${knownList}`,
      );
    }
    log.warn({ ignored, known: [...knownNames] }, "backend_options the driver does not know are ignored");
    return { known, ignored };
  }

  /**
   * Takes up an environment of an earlier run of berth (its resources exist,
   * the driver said): calls on its id work again, and its deadline counts on.
   */
  adopt(backend: Backend, record: EnvironmentRecord): void {
    this.slots.add(backend);
    const layout = record.layout ?? backend.driver.capabilities().globalLayout;
    this.register(backend, {
      ref: { id: record.id, state: record.state },
      layout,
      workdir: record.workdir ?? layout?.rootPath ?? "",
      createdAt: new Date(record.createdAt),
      deadlineAt: record.deadline === undefined ? undefined : new Date(record.deadline),
      ignoredOptions: [],
    });
  }

  /** What the state store keeps of every environment. */
  records(): EnvironmentRecord[] {
    return [...this.environments.values()].map((env) => ({
      id: env.ref.id,
      backend: env.backend.name,
      state: env.ref.state,
      stateVersion: env.backend.savedState.version,
      createdAt: env.createdAt.toISOString(),
      ...(env.deadlineAt ? { deadline: env.deadlineAt.toISOString() } : {}),
      ...(env.layout ? { layout: env.layout } : {}),
      ...(env.workdir ? { workdir: env.workdir } : {}),
    }));
  }

  /** The environments that exist now, as the reconciler sees them. */
  live(): { id: string; backend: Backend; createdAt: Date }[] {
    return [...this.environments.values()].map((env) => ({
      id: env.ref.id,
      backend: env.backend,
      createdAt: env.createdAt,
    }));
  }

  private register(
    backend: Backend,
    fields: Omit<Environment, "backend" | "inFlight" | "deadline" | "removing">,
  ): void {
    const env: Environment = { ...fields, backend, inFlight: new Set() };
    const { id } = env.ref;
    this.environments.set(id, env);
    this.metrics.environmentsActive.inc({ backend: backend.name });
    const deadlineAt = env.deadlineAt;
    if (!deadlineAt) return;
    const log = this.logger.child({ environmentId: id, backend: backend.name });
    env.deadline = setTimeout(
      () => {
        log.warn(
          { deadline: deadlineAt.toISOString() },
          "environment reached its environment_timeout; removing it",
        );
        this.remove(id).catch((err: unknown) =>
          log.error({ err: messageOf(err) }, "removing a timed-out environment failed"),
        );
      },
      Math.max(0, deadlineAt.getTime() - Date.now()),
    );
    env.deadline.unref();
  }

  /** Boots the environment, yielding progress lines as they come and then the image's env. */
  start(id: string, signal: AbortSignal): AsyncGenerator<StartEvent> {
    return this.streaming<StartEvent>(id, "start", signal, async (env, opSignal, events) => {
      const progress = (line: string) => events.push({ type: "progress", line });
      if (env.ignoredOptions.length > 0) {
        progress(
          `berth: ignoring backend_options the ${env.backend.name} backend does not know: ${env.ignoredOptions.join(", ")}`,
        );
      }
      const { imageEnv } = await env.backend.driver.start(env.ref, progress, opSignal);
      events.push({ type: "started", imageEnv });
    });
  }

  /**
   * Runs a command and yields its output as it comes, then its result. The
   * command is held back while the consumer is slow (at most about
   * maxMessageBytes per stream waits), so output of any size streams in
   * bounded memory.
   */
  exec(id: string, spec: ExecSpec, signal: AbortSignal): AsyncGenerator<ExecEvent> {
    if (spec.command.length === 0 || spec.command[0] === "") {
      throw invalidArgument(
        'command is empty: Exec needs at least the program to run, e.g. ["sh", "-c", "…"]',
      );
    }
    checkExecSpec(spec);
    return this.streaming<ExecEvent>(id, "exec", signal, async (env, opSignal, events) => {
      const sink = (stream: "stdout" | "stderr") =>
        channelWritable(events, (data): ExecEvent => ({ type: "output", stream, data }));
      const sinks = { stdout: sink("stdout"), stderr: sink("stderr") };
      const backend = env.backend.name;
      const resolved = { ...spec, workdir: resolveWorkdir(spec, env) };
      const timer = this.metrics.execDuration.startTimer({ backend });
      let outcome: ExecOutcome = "error";
      let result: ExecResult;
      try {
        result = redactResult(await env.backend.driver.exec(env.ref, resolved, sinks, opSignal), spec.env);
        outcome = result.kind;
      } catch (err) {
        // A backend's own message (an engine quoting TOKEN=…) must not carry values to the job log.
        throw redactError(err, spec.env);
      } finally {
        if (opSignal.aborted) {
          outcome = "cancelled";
          this.metrics.execCancellations.inc({ backend });
        }
        timer({ outcome });
      }
      // Output the driver wrote before it returned is delivered before the result.
      await Promise.all(
        [sinks.stdout, sinks.stderr].map((s) => {
          if (!s.writableEnded) s.end();
          return finished(s);
        }),
      );
      events.push({ type: "result", result });
    });
  }

  async copyIn(
    parts: AsyncIterable<CopyInPart>,
    signal: AbortSignal,
    onEnvironment?: (id: string) => void,
  ): Promise<void> {
    const iterator = parts[Symbol.asyncIterator]();
    const first = await iterator.next();
    if (first.done)
      throw invalidArgument(
        "CopyIn stream was empty: the first message must carry environment_id and dest_path",
      );
    const firstPart: CopyInPart = first.value;
    const { environmentId, destPath } = firstPart;
    if (!environmentId) throw invalidArgument("the first CopyIn message must set environment_id");
    onEnvironment?.(environmentId);
    const dest = absolutePath(destPath ?? "", "dest_path");
    let received = 0;
    async function* tarBytes(): AsyncGenerator<Uint8Array> {
      received += firstPart.data.length;
      if (firstPart.data.length > 0) yield firstPart.data;
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
        if (next.value.environmentId !== undefined || next.value.destPath !== undefined) {
          throw invalidArgument(
            "a CopyIn message after the first set environment_id or dest_path; only the first message may, later ones carry just data",
          );
        }
        received += next.value.data.length;
        yield next.value.data;
      }
    }
    await this.tracked(environmentId, "copyIn", signal, async (env, opSignal) => {
      const checked = checkedTar(Readable.from(tarBytes(), { objectMode: false }), {
        maxBytes: env.backend.limits.maxCopyInBytes,
      });
      let refusal: Error | undefined;
      checked.on("error", (err) => (refusal ??= err));
      // Remove or a deadline ends the copy even while the client sends nothing at all.
      const stop = () => checked.destroy(opSignal.reason as Error);
      opSignal.addEventListener("abort", stop, { once: true });
      try {
        await env.backend.driver.copyIn(env.ref, dest, checked, opSignal);
      } catch (err) {
        // The checker's own verdict names the bad entry; prefer it to the driver's echo of it.
        throw refusal instanceof BerthError ? refusal : err;
      } finally {
        opSignal.removeEventListener("abort", stop);
        this.countCopy(env.backend, "in", received);
      }
      if (opSignal.aborted) throw opSignal.reason;
      if (refusal !== undefined) throw refusal;
    });
  }

  /** The tar stream of a path, in messages of at most maxMessageBytes. */
  copyOut(id: string, srcPath: string, signal: AbortSignal): AsyncGenerator<Buffer> {
    const src = absolutePath(srcPath, "src_path");
    return this.streaming<Buffer>(id, "copyOut", signal, async (env, opSignal, chunks) => {
      const tar = await env.backend.driver.copyOut(env.ref, src, opSignal);
      let sent = 0;
      try {
        await pipeline(
          tar,
          channelWritable(chunks, (data) => {
            sent += data.length;
            return data;
          }),
          { signal: opSignal },
        );
      } finally {
        this.countCopy(env.backend, "out", sent);
      }
    });
  }

  async copyLocal(id: string, srcPath: string, destPath: string, signal: AbortSignal): Promise<void> {
    const src = absolutePath(srcPath, "src_path");
    const dest = absolutePath(destPath, "dest_path");
    await this.tracked(id, "copyLocal", signal, (env, opSignal) => {
      const { driver } = env.backend;
      if (!driver.copyLocal || !driver.capabilities().supportsLocalCopy) {
        throw new BerthError(
          Status.FAILED_PRECONDITION,
          `backend ${env.backend.name} does not support CopyLocal (supports_local_copy is false); use CopyIn`,
        );
      }
      return driver.copyLocal(env.ref, src, dest, opSignal);
    });
  }

  /** plugin.v1 UpdateEnv: current_env plus the variables of a GITHUB_ENV-format file. */
  async updateEnv(
    id: string,
    srcPath: string,
    currentEnv: Record<string, string>,
    signal: AbortSignal,
  ): Promise<Record<string, string>> {
    const src = absolutePath(srcPath, "src_path");
    const content = await this.tracked(id, "updateEnv", signal, (env, opSignal) =>
      env.backend.driver.readFile(env.ref, src, maxEnvFileBytes + 1, opSignal),
    );
    if (content === undefined) return currentEnv;
    if (content.length > maxEnvFileBytes) {
      throw new BerthError(
        Status.RESOURCE_EXHAUSTED,
        `env file ${src} is larger than ${maxEnvFileBytes} bytes; write less to GITHUB_ENV (large values belong in files)`,
      );
    }
    return { ...currentEnv, ...parseEnvFile(content.toString("utf8")) };
  }

  async health(id: string, signal: AbortSignal): Promise<{ waitMs: number }> {
    return this.tracked(id, "isHealthy", signal, (env) => env.backend.driver.health(env.ref));
  }

  /**
   * Removes an environment; unknown ids succeed, so Remove is idempotent.
   * What still runs on it is aborted and waited for first (the runner may
   * Remove right after cancelling a stream whose command is still dying).
   */
  remove(id: string): Promise<void> {
    const env = this.environments.get(id);
    if (!env) return Promise.resolve();
    env.removing ??= this.removeNow(env).catch((err: unknown) => {
      // Still there: calls work again, and a later Remove tries once more.
      env.removing = undefined;
      throw err;
    });
    return env.removing;
  }

  private async removeNow(env: Environment): Promise<void> {
    const { id } = env.ref;
    for (const operation of env.inFlight)
      operation.controller.abort(new BerthError(Status.ABORTED, "the environment is being removed"));
    await Promise.all([...env.inFlight].map((operation) => operation.over));
    await withDeadline(env.backend, "remove", new AbortController().signal, () =>
      env.backend.driver.remove(env.ref),
    );
    clearTimeout(env.deadline);
    this.environments.delete(id);
    this.release(env.backend);
    this.metrics.environmentsActive.dec({ backend: env.backend.name });
    await this.persist(this.records()).catch((err: unknown) =>
      this.logger.error({ err: messageOf(err) }, "cannot update berth's state file after a Remove"),
    );
    this.logger.info({ environmentId: id, backend: env.backend.name }, "environment removed");
  }

  private countCopy(backend: Backend, direction: "in" | "out", bytes: number): void {
    this.metrics.copyBytes.inc({ backend: backend.name, direction }, bytes);
  }

  private release(backend: Backend): void {
    this.slots.release(backend);
    for (const listener of this.removedListeners) listener(backend);
  }

  /** Environments of a backend now, counting those being created. */
  countOf(backend: Backend): number {
    return this.slots.count(backend);
  }

  /** Called after an environment of a backend is gone (removed, or its Create failed). */
  onRemoved(listener: (backend: Backend) => void): void {
    this.removedListeners.push(listener);
  }

  /** Whether an id is an environment that exists, or one being created. */
  knows(id: string): boolean {
    return this.environments.has(id) || this.creating.has(id);
  }

  /** The name of the backend an environment belongs to, if it exists. */
  backendOf(id: string): string | undefined {
    return this.environments.get(id)?.backend.name;
  }

  private lookup(id: string): Environment {
    if (!id) throw invalidArgument("environment_id is empty; pass the id Create returned");
    const env = this.environments.get(id);
    if (!env) {
      throw notFound(
        `environment ${id} not found: it was removed, never created here, or berth restarted since`,
      );
    }
    if (env.removing) throw notFound(`environment ${id} is being removed`);
    return env;
  }

  /**
   * Runs a streaming operation and yields what it pushes. If the consumer
   * stops early (the call was cancelled), the operation is aborted and
   * awaited, so nothing outlives the call.
   */
  private async *streaming<E>(
    id: string,
    rpc: LimitedRpc,
    signal: AbortSignal,
    run: (env: Environment, signal: AbortSignal, events: EventChannel<E>) => Promise<void>,
  ): AsyncGenerator<E> {
    const events = new EventChannel<E>();
    const consumerGone = new AbortController();
    const running = this.tracked(id, rpc, AbortSignal.any([signal, consumerGone.signal]), (env, opSignal) =>
      run(env, opSignal, events),
    ).then(
      () => events.end(),
      (err: unknown) => events.fail(err),
    );
    try {
      yield* events;
    } finally {
      consumerGone.abort();
      events.abandon();
      await running;
    }
  }

  /**
   * Runs fn on the environment as one call in flight, with a signal that
   * Remove and the backend's deadline for this RPC can abort. Calls do not
   * wait for each other: Docker, Kubernetes and processes let them overlap.
   */
  private async tracked<T>(
    id: string,
    rpc: LimitedRpc,
    signal: AbortSignal,
    fn: (env: Environment, signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const env = this.lookup(id);
    let done!: () => void;
    const operation: Operation = { controller: new AbortController(), over: new Promise((r) => (done = r)) };
    env.inFlight.add(operation);
    try {
      return await withDeadline(
        env.backend,
        rpc,
        AbortSignal.any([signal, operation.controller.signal]),
        (opSignal) => {
          opSignal.throwIfAborted();
          return fn(env, opSignal);
        },
      );
    } finally {
      env.inFlight.delete(operation);
      done();
    }
  }
}

/**
 * Runs fn with the backend's deadline for this RPC (limits.rpcTimeoutSeconds),
 * if it has one: past it, the operation is aborted (a command is killed) and
 * the call fails with DEADLINE_EXCEEDED. A driver call that takes no signal
 * (health, remove) cannot be stopped: the call answers at the deadline and
 * the driver's work ends on its own, its outcome seen by the next call.
 */
async function withDeadline<T>(
  backend: Backend,
  rpc: LimitedRpc,
  signal: AbortSignal,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const unstoppable = rpc === "isHealthy" || rpc === "remove";
  const limitMs = backend.limits.rpcTimeoutMs[rpc];
  if (limitMs === undefined) return fn(signal);
  const exceeded = new BerthError(
    Status.DEADLINE_EXCEEDED,
    `${rpc} took longer than backend ${backend.name} allows (limits.rpcTimeoutSeconds.${rpc} = ${limitMs / 1000})`,
  );
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(exceeded), limitMs);
  try {
    const running = fn(AbortSignal.any([signal, deadline.signal]));
    if (!unstoppable) return await running;
    // What the driver's call ends with after the deadline is for the next call to see.
    running.catch(() => {});
    const passed = new Promise<never>((_resolve, reject) =>
      deadline.signal.addEventListener("abort", () => reject(exceeded), { once: true }),
    );
    return await Promise.race([running, passed]);
  } catch (err) {
    throw deadline.signal.aborted && !signal.aborted ? exceeded : err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The absolute directory a command runs in. An empty workdir is the
 * environment's working directory; a relative one (the runner sends a step's
 * `working-directory: sub` unresolved) is taken from the job's
 * GITHUB_WORKSPACE when the Exec's env has one, else from that directory, as
 * act's Docker backend resolves it against the job's working directory.
 */
function resolveWorkdir(spec: ExecSpec, env: Environment): string {
  checkPathLimits(spec.workdir, "workdir");
  if (spec.workdir.startsWith("/")) return posix.normalize(spec.workdir);
  const workspace = spec.env.GITHUB_WORKSPACE;
  const base = workspace?.startsWith("/") ? workspace : env.workdir || env.layout?.rootPath || "/";
  return spec.workdir ? posix.resolve(base, spec.workdir) : env.workdir || base;
}

/** Linux's PATH_MAX and NAME_MAX: longer paths and names fail in every backend anyway. */
const maxPathBytes = 4096;
const maxNameBytes = 255;

/** Checks an RPC path argument: absolute, normalised, within Linux's limits. */
function absolutePath(path: string, field: string): string {
  if (!path) throw invalidArgument(`${field} is empty; pass an absolute path inside the environment`);
  if (!path.startsWith("/"))
    throw invalidArgument(`${field} "${path}" is not absolute; pass an absolute path inside the environment`);
  checkPathLimits(path, field);
  return posix.normalize(path);
}

function checkPathLimits(path: string, field: string): void {
  if (path.includes("\0")) throw invalidArgument(`${field} contains a NUL byte`);
  const bytes = Buffer.byteLength(path);
  if (bytes > maxPathBytes) {
    throw invalidArgument(
      `${field} is ${bytes} bytes long; paths may have at most ${maxPathBytes} (PATH_MAX)`,
    );
  }
  const longest = Math.max(...path.split("/").map((name) => Buffer.byteLength(name)));
  if (longest > maxNameBytes) {
    throw invalidArgument(
      `${field} has a ${longest}-byte name in it; a file name may have at most ${maxNameBytes} bytes (NAME_MAX)`,
    );
  }
}

/**
 * A Writable feeding a channel. Its write completes once the consumer has
 * taken the data (backpressure); what is written meanwhile is buffered up to
 * maxMessageBytes and sent as one message.
 */
function channelWritable<E>(events: EventChannel<E>, toEvent: (data: Buffer) => E): Writable {
  const send = (data: Buffer, callback: () => void) => {
    for (let offset = 0; offset < data.length; offset += maxMessageBytes) {
      const last = offset + maxMessageBytes >= data.length;
      events.push(toEvent(data.subarray(offset, offset + maxMessageBytes)), last ? callback : undefined);
    }
    if (data.length === 0) callback();
  };
  return new Writable({
    highWaterMark: maxMessageBytes,
    write(chunk: Buffer, _encoding, callback) {
      send(chunk, () => callback());
    },
    writev(chunks, callback) {
      send(Buffer.concat(chunks.map(({ chunk }) => chunk as Buffer)), () => callback());
    },
  });
}
