import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { constants } from "node:fs";
import { type FileHandle, access, mkdir, readdir, readlink, realpath, rm, stat } from "node:fs/promises";
import { userInfo } from "node:os";
import { basename, delimiter, dirname, join, posix, relative, sep } from "node:path";
import type { Readable } from "node:stream";
import { constants as osConstants } from "node:os";
import type { Logger } from "pino";
import type {
  CreatedEnvironment,
  Driver,
  DriverCapabilities,
  DriverContext,
  EnvironmentRef,
  EnvironmentSpec,
  ExecResult,
  ExecSinks,
  ExecSpec,
  Layout,
  ManagedEnvironment,
} from "../../src/driver.js";
import {
  BerthError,
  Status,
  failedPrecondition,
  invalidArgument,
  messageOf,
  missingPath,
  notFound,
  permissionDenied,
} from "../../src/errors.js";
import { execMarkerVariable } from "../kit/exec-marker.js";
import { exitedWith } from "../kit/exec-outcome.js";
import { type KillEscalation, escalateKill } from "../kit/kill-escalation.js";
import { PrefixCapture } from "../kit/output-capture.js";
import { checkedTar } from "../../src/tar-safety.js";
import { extractTar } from "./extract.js";
import type { HostOptions } from "./options.js";
import { Directory } from "./directory.js";
import { packEntry } from "./pack.js";
import { type PathMapping, isInside, mapPath } from "./paths.js";
import { PidNamespaces } from "./pid-namespace.js";
import { signalProcessTree } from "./process-tree.js";
import { removeTree } from "./remove-tree.js";
import { RootOwner } from "./root-owner.js";
import type { HostEnvironment } from "./state.js";
import { runnerArch, runnerOs } from "../kit/runner-platform.js";

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** How often a command is started when bubblewrap fails to set up its sandbox. */
const bwrapAttempts = 3;
/** How bubblewrap words a mount it could not set up (its die_with_error messages). */
const bwrapMountFailure = /^Can't (bind mount|remount|mount)\b/;

/** Set in every command's environment, so its processes can be found again (as the Actions runner's RUNNER_TRACKING_ID). */
const environmentMarker = "BERTH_ENVIRONMENT_ID";

/** How long a finished command's output pipes may stay open (held by a background process) before berth stops waiting. */
const outputDrainMs = 1000;

/**
 * Each environment is a private directory; commands are plain processes.
 * With bubblewrap, every command runs in its own mount namespace where the
 * environment's directory is mounted at one fixed path (the layout plugin.v1
 * announces once for all environments) and other environments are hidden.
 */
export class HostDriver implements Driver<HostEnvironment> {
  private isolation: "bwrap" | "none" = "none";
  /** Each environment's own PID namespace, under bubblewrap where the machine allows it. */
  private pidNamespaces: PidNamespaces | undefined;
  private readonly envsDir: string;
  /** Where an environment's directory appears to its commands under bubblewrap. */
  private readonly mountPoint: string;
  /** Output pipes of finished commands still held open by their background processes, per environment. */
  private readonly lingering = new Map<string, Set<ChildProcess>>();

  /** This instance's own directory under the root: berths sharing a root never see each other's. */
  private readonly instanceDir: string;
  private readonly owner: RootOwner;

  private readonly logger: Logger;
  private readonly serving: boolean;
  /** berth's own directories, hidden from commands under bubblewrap. */
  private readonly ownPaths: readonly string[];

  constructor(
    private readonly options: HostOptions,
    { logger, instance, serving, ownPaths }: DriverContext,
  ) {
    this.logger = logger;
    this.serving = serving;
    this.ownPaths = ownPaths;
    this.instanceDir = join(options.root, instance);
    this.envsDir = join(this.instanceDir, "envs");
    this.mountPoint = join(this.instanceDir, "env");
    this.owner = new RootOwner(this.instanceDir, instance);
  }

  async provision(): Promise<void> {
    try {
      await mkdir(this.envsDir, { recursive: true, mode: 0o700 });
      await mkdir(this.mountPoint, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw failedPrecondition(
        `driver host: provision: cannot create ${this.instanceDir}: ${messageOf(err)}`,
      );
    }
    if (this.serving) await this.owner.claim();
    if (this.options.isolation === "none") return;
    const problem = await this.probeBubblewrap(undefined);
    if (problem === undefined) {
      this.isolation = "bwrap";
      const namespaces = new PidNamespaces(environmentMarker);
      const pidProblem = await this.probeBubblewrap(namespaces);
      if (pidProblem === undefined) this.pidNamespaces = namespaces;
      else {
        this.logger.warn(
          { problem: pidProblem },
          "bubblewrap cannot give environments PID namespaces of their own here; their commands see every process of the machine",
        );
      }
    } else if (this.options.isolation === "bwrap") {
      throw failedPrecondition(
        `driver host: provision: isolation=bwrap but bubblewrap does not work here: ${problem}`,
      );
    } else {
      this.logger.warn(
        { problem },
        "bubblewrap is not usable; commands see the environments' real directories and plugin.v1 is unavailable (install bubblewrap for both)",
      );
    }
    this.logger.info(
      { root: this.options.root, isolation: this.isolation, pidNamespaces: this.pidNamespaces !== undefined },
      "host driver ready",
    );
  }

  capabilities(): DriverCapabilities {
    return {
      supportsServiceContainers: false,
      managesOwnNetworking: false,
      supportsDockerActions: false,
      supportsLocalCopy: this.options.allowedLocalRoots.length > 0,
      globalLayout: this.isolation === "bwrap" ? this.layoutAt(this.mountPoint) : undefined,
      backendOptions: [],
      globalLayoutUnavailableReason:
        "the host driver runs without bubblewrap, so each environment has its own paths; install bubblewrap (apt-get install bubblewrap) or use plugin.v1alpha",
    };
  }

  async create(id: string, spec: EnvironmentSpec): Promise<CreatedEnvironment<HostEnvironment>> {
    if (spec.services.length > 0) {
      throw invalidArgument(
        "the host driver cannot run service containers (supports_service_containers is false)",
      );
    }
    if (spec.capAdd.length > 0 || spec.capDrop.length > 0) {
      throw invalidArgument(
        "the host driver cannot add or drop capabilities; leave cap_add and cap_drop empty",
      );
    }
    const top = this.envDir(id);
    const dir = join(top, "root");
    const privateDir = join(top, "private");
    const layout = this.layoutAt(this.isolation === "bwrap" ? this.mountPoint : dir);
    await mkdir(top, { mode: 0o700 });
    for (const sub of ["act", "toolcache", "tmp"]) await mkdir(join(dir, sub), { recursive: true });
    if (this.isolation === "bwrap") {
      for (const path of this.options.privateDirs) await mkdir(join(privateDir, path), { recursive: true });
    }
    const workingDir = spec.workingDir || layout.rootPath;
    const state: HostEnvironment = { top, dir, privateDir, layout, env: spec.env, workingDir };
    return { state, layout };
  }

  async start(
    env: EnvironmentRef<HostEnvironment>,
    progress: (line: string) => void,
  ): Promise<{ imageEnv: Record<string, string> }> {
    const { dir } = env.state;
    await stat(dir).catch(() => {
      throw failedPrecondition(`environment directory ${dir} is gone`);
    });
    progress(`host environment ready at ${env.state.layout.rootPath}`);
    return { imageEnv: { PATH: process.env.PATH ?? defaultPath } };
  }

  async exec(
    ref: EnvironmentRef<HostEnvironment>,
    spec: ExecSpec,
    sinks: ExecSinks,
    signal: AbortSignal,
  ): Promise<ExecResult> {
    const env = ref.state;
    if (spec.user && spec.user !== userInfo().username && spec.user !== String(process.getuid?.())) {
      return {
        kind: "failed",
        message: `the host driver runs commands as berth's own user (${userInfo().username}); it cannot run them as "${spec.user}"`,
      };
    }
    const variables: Record<string, string> = {
      PATH: process.env.PATH ?? defaultPath,
      HOME: env.layout.rootPath,
      TMPDIR: env.layout.tempPath,
      ...env.env,
      ...spec.env,
      [environmentMarker]: ref.id,
      [execMarkerVariable]: randomUUID(),
    };
    const workdir = posix.resolve(env.workingDir, spec.workdir || ".");
    const realWorkdir = this.toReal(ref, workdir, "workdir");
    // Each check is a few round trips through libuv's thread pool: made side by side, they cost the slowest one.
    const [workdirProblem, missing] = await Promise.all([
      // Created when missing, as Docker creates a container's WorkingDir (the runner expects its job directory).
      this.openDirectory(ref, workdir, "workdir", true).then(
        (dir) => dir.close().then(() => undefined),
        (err: unknown) => `cannot use working directory ${workdir}: ${messageOf(err)}`,
      ),
      this.findProgram(ref, spec.command[0], variables.PATH ?? "", workdir),
    ]);
    if (workdirProblem) return { kind: "failed", message: workdirProblem };
    if (missing) return { kind: "failed", message: missing };

    const marker = { name: execMarkerVariable, value: variables[execMarkerVariable] };
    if (this.isolation === "none") {
      const child = spawn(spec.command[0], spec.command.slice(1), {
        cwd: realWorkdir,
        env: variables,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      });
      return this.superviseCommand(ref.id, child, marker, sinks, signal);
    }
    // bubblewrap's recursive bind of / can fail while mounts come and go under
    // it (a Docker engine on the same host starting containers): it then exits
    // 1 with "bwrap: Can't …mount…" before the command ran, and trying again
    // is safe. Only that phrasing counts: a command's own "bwrap: " stays its output.
    for (let attempt = 1; ; attempt++) {
      const stderr = new PrefixCapture(sinks.stderr, "bwrap: ");
      let wroteStdout = false;
      const inPidNamespace = this.pidNamespaces !== undefined;
      const [entered, args] = await Promise.all([
        this.pidNamespaces?.enter(ref.id).then(
          (handle) => ({ handle }),
          (err: unknown) => ({ failure: messageOf(err) }),
        ),
        this.bwrapArgs(env, workdir, inPidNamespace),
      ]);
      if (entered && "failure" in entered) return { kind: "failed", message: entered.failure };
      const pidNamespace: FileHandle | undefined = entered?.handle;
      const child = spawn("bwrap", [...args, "--", ...spec.command], {
        env: variables,
        detached: true,
        stdio: ["ignore", "pipe", "pipe", ...(pidNamespace ? [pidNamespace.fd] : [])],
      });
      // The child has its own copy of the descriptor once spawned.
      await pidNamespace?.close();
      // superviseCommand pipes the output at once; this listener only notes that some came.
      const running = this.superviseCommand(ref.id, child, marker, { stdout: sinks.stdout, stderr }, signal);
      child.stdout!.once("data", () => (wroteStdout = true));
      const result = await running;
      const reason = stderr.failure();
      const setupFailed =
        result.kind === "exited" &&
        result.exitCode === 1 &&
        !wroteStdout &&
        reason !== undefined &&
        bwrapMountFailure.test(reason);
      if (!setupFailed) {
        stderr.release();
        return result;
      }
      if (attempt === bwrapAttempts) {
        return {
          kind: "failed",
          message: `bubblewrap could not set up the command's sandbox (${attempt} tries): ${reason}`,
        };
      }
      this.logger.debug({ environmentId: ref.id, attempt, reason }, "bubblewrap setup failed; trying again");
      await delay(50 * attempt);
    }
  }

  /** Streams a command's output, kills its tree when the call is cancelled, and reports how it ended. */
  private async superviseCommand(
    id: string,
    child: ChildProcess,
    marker: { name: string; value: string },
    sinks: ExecSinks,
    signal: AbortSignal,
  ): Promise<ExecResult> {
    child.stdout!.pipe(sinks.stdout, { end: false });
    child.stderr!.pipe(sinks.stderr, { end: false });
    const outputClosed = new Promise<void>((resolve) => child.once("close", () => resolve()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null } | { error: Error }>(
      (resolve) => {
        child.once("exit", (code, exitSignal) => resolve({ code, signal: exitSignal }));
        child.once("error", (error) => resolve({ error }));
      },
    );
    let escalation: KillEscalation | undefined;
    const kill = () => {
      if (child.pid === undefined) return;
      const pid = child.pid;
      escalation = escalateKill(
        (stop) => signalProcessTree(pid, marker, `SIG${stop}`),
        this.options.killGraceMs,
      );
    };
    signal.addEventListener("abort", kill, { once: true });
    try {
      const outcome = await exited;
      if ("error" in outcome) {
        return { kind: "failed", message: `cannot start ${child.spawnfile}: ${outcome.error.message}` };
      }
      if (signal.aborted) {
        // The group may still hold survivors of SIGTERM: make sure they go too.
        await signalProcessTree(child.pid, marker, "SIGKILL");
      }
      const drained = await Promise.race([
        outputClosed.then(() => true),
        delay(outputDrainMs).then(() => false),
      ]);
      if (!drained) this.keepLingering(id, child);
      if (signal.aborted) throw signal.reason;
      return exitedWith(outcome.code ?? 128 + (osConstants.signals[outcome.signal!] ?? 0));
    } finally {
      escalation?.cancel();
      signal.removeEventListener("abort", kill);
      child.stdout!.unpipe(sinks.stdout);
      child.stderr!.unpipe(sinks.stderr);
    }
  }

  /**
   * A background process of a finished command still holds its output pipes:
   * keep reading (and dropping) so it does not die of SIGPIPE, until Remove.
   */
  private keepLingering(id: string, child: ChildProcess): void {
    child.stdout!.resume();
    child.stderr!.resume();
    const set = this.lingering.get(id) ?? new Set();
    set.add(child);
    this.lingering.set(id, set);
    child.once("close", () => set.delete(child));
  }

  async copyIn(ref: EnvironmentRef<HostEnvironment>, destPath: string, tar: Readable): Promise<void> {
    const dest = await this.openDirectory(ref, destPath, "dest_path", true);
    try {
      await extractTar(tar, dest);
    } finally {
      await dest.close();
    }
  }

  async copyOut(ref: EnvironmentRef<HostEnvironment>, srcPath: string): Promise<Readable> {
    const { parent, name } = await this.openParent(ref, srcPath, "src_path").catch((err: unknown) => {
      if (err instanceof BerthError && err.missingPath) {
        throw missingPath(`${srcPath} does not exist in the environment`);
      }
      throw err;
    });
    const found = await parent.entry(name).catch(async (err: unknown) => {
      await parent.close();
      throw err;
    });
    if (!found) {
      await parent.close();
      throw missingPath(`${srcPath} does not exist in the environment`);
    }
    return packEntry(parent, name, posix.basename(srcPath) || name, this.logger);
  }

  async copyLocal(ref: EnvironmentRef<HostEnvironment>, srcPath: string, destPath: string): Promise<void> {
    const src = await realpathOrNotFound(srcPath);
    const roots = await Promise.all(
      this.options.allowedLocalRoots.map((root) => realpathOrNotFound(root).catch(() => root)),
    );
    if (!roots.some((root) => isInside(root, src))) {
      throw permissionDenied(
        `CopyLocal from ${srcPath} is not allowed: it is outside the host driver's allowedLocalRoots (${this.options.allowedLocalRoots.join(", ") || "none"})`,
      );
    }
    // The contents of srcPath go into destPath, as `cp -a src/. dest` does.
    const source = await Directory.open(dirname(src), dirname(src));
    const dest = await this.openDirectory(ref, destPath, "dest_path", true);
    try {
      await extractTar(checkedTar(packEntry(source, basename(src), ".", this.logger)), dest);
    } finally {
      await dest.close();
    }
  }

  async readFile(
    ref: EnvironmentRef<HostEnvironment>,
    path: string,
    maxBytes: number,
  ): Promise<Buffer | undefined> {
    let opened;
    try {
      const { parent, name } = await this.openParent(ref, path, "src_path");
      opened = await parent.openFile(name).finally(() => parent.close());
    } catch (err) {
      if (err instanceof BerthError && err.missingPath) return undefined;
      throw err;
    }
    if ("refused" in opened) {
      if (opened.refused === "missing") return undefined;
      throw invalidArgument(
        `${path} is ${opened.refused === "symlink" ? "a symlink" : "not a regular file"}; berth reads only regular files there`,
      );
    }
    const { handle } = opened;
    try {
      const buffer = Buffer.alloc(maxBytes);
      const { bytesRead } = await handle.read(buffer, 0, maxBytes, 0);
      return buffer.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  }

  async health(ref: EnvironmentRef<HostEnvironment>): Promise<{ waitMs: number }> {
    const { dir } = ref.state;
    const dirStat = await stat(dir).catch(() => undefined);
    if (!dirStat?.isDirectory())
      throw new BerthError(Status.FAILED_PRECONDITION, `environment directory ${dir} is gone`);
    return { waitMs: 0 };
  }

  async remove(ref: EnvironmentRef<HostEnvironment | undefined>): Promise<void> {
    // Whatever the environment's commands left running, wherever it went (its PID namespace's holder too).
    await signalProcessTree(undefined, { name: environmentMarker, value: ref.id }, "SIGKILL");
    this.pidNamespaces?.forget(ref.id);
    for (const child of this.lingering.get(ref.id) ?? []) {
      child.stdout?.destroy();
      child.stderr?.destroy();
    }
    this.lingering.delete(ref.id);
    await removeTree(ref.state?.top ?? ref.state?.dir ?? this.envDir(ref.id));
  }

  /** Stops reading what background processes still write; the environments stay, for the next berth to adopt. */
  async cleanup(): Promise<void> {
    for (const children of this.lingering.values()) {
      for (const child of children) {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }
    }
    this.lingering.clear();
    await this.owner.release();
  }

  async adopt(ref: EnvironmentRef<HostEnvironment>): Promise<boolean> {
    return (await stat(ref.state.dir).catch(() => undefined))?.isDirectory() ?? false;
  }

  async listManaged(): Promise<ManagedEnvironment<HostEnvironment>[]> {
    const names = await readdir(this.envsDir).catch(() => []);
    const found: ManagedEnvironment<HostEnvironment>[] = [];
    for (const id of names.filter((name) => /^berth-[0-9a-f]{16}$/.test(name))) {
      const info = await stat(this.envDir(id)).catch(() => undefined);
      // Some filesystems keep no birth time (0): the last change is the best guess then.
      const createdAt = info && info.birthtimeMs > 0 ? info.birthtime : info?.mtime;
      if (info?.isDirectory()) found.push({ id, createdAt, state: undefined });
    }
    return found;
  }

  private envDir(id: string): string {
    return join(this.envsDir, id);
  }

  /** Where the environment's own directories appear to its commands, and where they really are. */
  private mappings(env: HostEnvironment): PathMapping[] {
    const privateDirs =
      this.isolation === "bwrap" && env.privateDir !== undefined
        ? this.options.privateDirs.map((seen) => ({ seen, real: join(env.privateDir!, seen) }))
        : [];
    return [{ seen: env.layout.rootPath, real: env.dir }, ...privateDirs];
  }

  /** The real path of a path as the environment's commands see it; outside the environment: refused. */
  private toReal(ref: EnvironmentRef<HostEnvironment>, path: string, field: string): string {
    const env = ref.state;
    const real = mapPath(this.mappings(env), path);
    if (real !== undefined) return real;
    const normalised = posix.normalize(path);
    const privateDir = this.options.privateDirs.find((dir) => isInside(dir, normalised));
    if (privateDir !== undefined) {
      throw failedPrecondition(
        `${field} ${path} is under ${privateDir}, which each environment has a private copy of only with bubblewrap (isolation=bwrap); install bubblewrap, or use paths under the environment's root ${env.layout.rootPath}`,
      );
    }
    const allowed = this.mappings(env).map((mapping) => mapping.seen);
    throw invalidArgument(
      `${field} ${path} is outside the environment; paths must be under ${allowed.join(" or ")}`,
    );
  }

  /** The environment's own directory that holds a path, and the path's components below it. */
  private locate(
    ref: EnvironmentRef<HostEnvironment>,
    path: string,
    field: string,
  ): { base: Promise<Directory>; components: string[] } {
    const real = this.toReal(ref, path, field);
    const mapping = this.mappings(ref.state)
      .filter((candidate) => isInside(candidate.real, real))
      .sort((a, b) => b.real.length - a.real.length)[0];
    const components = relative(mapping.real, real).split(sep).filter(Boolean);
    return { base: Directory.open(mapping.real, mapping.seen), components };
  }

  /** A directory of the environment (made if `create` and missing), opened race-free (directory.ts). */
  private async openDirectory(
    ref: EnvironmentRef<HostEnvironment>,
    path: string,
    field: string,
    create: boolean,
  ): Promise<Directory> {
    const { base, components } = this.locate(ref, path, field);
    const root = await base;
    return root.walk(components, create).finally(() => root.close());
  }

  /** The open directory that holds a path, and the path's last name in it. */
  private async openParent(
    ref: EnvironmentRef<HostEnvironment>,
    path: string,
    field: string,
  ): Promise<{ parent: Directory; name: string }> {
    const { base, components } = this.locate(ref, path, field);
    const root = await base;
    const name = components.pop();
    if (name === undefined) {
      // The mapped directory itself: its parent is berth's own.
      await root.close();
      const real = this.toReal(ref, path, field);
      return { parent: await Directory.open(dirname(real), dirname(path)), name: basename(real) };
    }
    return { parent: await root.walk(components).finally(() => root.close()), name };
  }

  private layoutAt(root: string): Layout {
    return {
      rootPath: root,
      actPath: join(root, "act"),
      toolCachePath: join(root, "toolcache"),
      tempPath: join(root, "tmp"),
      pathVariableName: "PATH",
      defaultPathVariable: process.env.PATH ?? defaultPath,
      pathSeparator: delimiter,
      environmentCaseInsensitive: false,
      os: runnerOs(process.platform),
      arch: runnerArch(process.arch),
    };
  }

  /**
   * bubblewrap's arguments for a command of the environment. The sandbox's /
   * is bubblewrap's own tmpfs with each of the host's top-level entries
   * bound into it (so directories the host does not have, such as
   * /workspace, can be mounted without being made on the host); then the
   * environment's root at the mount point, its private directories, and the
   * other environments' directories hidden. In the environment's PID
   * namespace (passed as descriptor 3) /proc is that namespace's own.
   */
  private async bwrapArgs(
    env: Pick<HostEnvironment, "dir" | "privateDir">,
    workdir: string,
    inPidNamespace: boolean,
  ): Promise<string[]> {
    const args: string[] = inPidNamespace ? ["--pidns", "3", "--proc", "/proc"] : [];
    // The look-ups are independent: made side by side (see exec), the arguments keep their order.
    const entries = (await readdir("/", { withFileTypes: true })).filter(
      (entry) => !(inPidNamespace && entry.name === "proc"),
    );
    const [mounts, hidden] = await Promise.all([
      Promise.all(
        entries.map(async (entry) => {
          const path = `/${entry.name}`;
          return entry.isSymbolicLink()
            ? ["--symlink", await readlink(path), path]
            : ["--dev-bind", path, path];
        }),
      ),
      // berth's own state, sockets and audit log, and its whole root (every instance's environments)
      // are out of sight; then this environment's directory is mounted.
      Promise.all(
        this.ownPaths.map(async (path) => {
          const info = await stat(path).catch(() => undefined);
          if (info?.isDirectory() && path !== "/") return ["--tmpfs", path];
          return info ? ["--ro-bind", "/dev/null", path] : [];
        }),
      ),
    ]);
    args.push(...mounts.flat(), ...hidden.flat());
    args.push("--tmpfs", this.options.root, "--bind", env.dir, this.mountPoint);
    if (env.privateDir !== undefined) {
      for (const dir of this.options.privateDirs) args.push("--bind", join(env.privateDir, dir), dir);
    }
    if (!this.options.keepCapabilities) args.push("--cap-drop", "ALL");
    args.push("--chdir", workdir, "--die-with-parent");
    return args;
  }

  /** Why the program cannot be run, or undefined if it can: checked up front so the runner gets a clear message. */
  private async findProgram(
    ref: EnvironmentRef<HostEnvironment>,
    program: string,
    path: string,
    workdir: string,
  ): Promise<string | undefined> {
    // The environment's own directories are mapped; other paths are the host's (as commands see them).
    const mappings = this.mappings(ref.state);
    const real = (p: string) => mapPath(mappings, p) ?? p;
    const executable = async (p: string) => {
      try {
        await access(real(p), constants.X_OK);
        return (await stat(real(p))).isFile();
      } catch {
        return false;
      }
    };
    if (program.includes("/")) {
      const full = posix.resolve(workdir, program);
      const exists = await stat(real(full)).catch(() => undefined);
      if (!exists) return `cannot run ${program}: no such file`;
      return (await executable(full)) ? undefined : `cannot run ${program}: not an executable file`;
    }
    for (const entry of path.split(":")) {
      if (entry && (await executable(posix.join(posix.resolve(workdir, entry), program)))) return undefined;
    }
    return `cannot run ${program}: executable file not found in PATH (${path})`;
  }

  /** Why a command cannot run under bubblewrap here (in a PID namespace of its own, with namespaces), or undefined. */
  private async probeBubblewrap(namespaces: PidNamespaces | undefined): Promise<string | undefined> {
    // Unique: berths of other instances on this machine probe too, and Remove-like sweeps go by this id.
    const probeId = `.probe-${randomUUID()}`;
    const probeDir = join(this.envsDir, probeId);
    await mkdir(probeDir, { recursive: true });
    let pidNamespace: FileHandle | undefined;
    try {
      pidNamespace = await namespaces?.enter(probeId);
      const args = await this.bwrapArgs({ dir: probeDir }, this.mountPoint, pidNamespace !== undefined);
      const child = spawn("bwrap", [...args, "--", "true"], {
        stdio: ["ignore", "ignore", "pipe", ...(pidNamespace ? [pidNamespace.fd] : [])],
      });
      let stderr = "";
      child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      return await new Promise<string | undefined>((resolve) => {
        child.once("error", (err) => resolve(`cannot run bwrap: ${err.message}`));
        child.once("close", (code) =>
          resolve(code === 0 ? undefined : `bwrap exited ${code}: ${stderr.trim()}`),
        );
      });
    } catch (err) {
      return messageOf(err);
    } finally {
      await pidNamespace?.close();
      if (namespaces) {
        await signalProcessTree(undefined, { name: environmentMarker, value: probeId }, "SIGKILL");
        namespaces.forget(probeId);
      }
      await rm(probeDir, { recursive: true, force: true });
    }
  }
}

async function realpathOrNotFound(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    throw notFound(`${path} does not exist on the machine berth runs on`);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
