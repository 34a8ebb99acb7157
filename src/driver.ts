import type { Readable, Writable } from "node:stream";
import type { Logger } from "pino";
import { z } from "zod";

/** Where an environment's directories are, as its commands see them (a schema: records and driver state keep it). */
export const layoutSchema = z
  .object({
    rootPath: z.string(),
    actPath: z.string(),
    toolCachePath: z.string(),
    tempPath: z.string(),
    pathVariableName: z.string(),
    defaultPathVariable: z.string(),
    pathSeparator: z.string(),
    environmentCaseInsensitive: z.boolean(),
    /** RUNNER_OS / RUNNER_ARCH values, e.g. "Linux" and "X64". */
    os: z.string(),
    arch: z.string(),
  })
  .strict();

export type Layout = z.infer<typeof layoutSchema>;

/** What a driver can do; the same for every environment it makes. */
export interface DriverCapabilities {
  supportsServiceContainers: boolean;
  managesOwnNetworking: boolean;
  supportsDockerActions: boolean;
  supportsLocalCopy: boolean;
  /**
   * The one layout that holds for every environment, which plugin.v1 needs;
   * undefined when the driver can only report layouts per environment.
   */
  globalLayout?: Layout;
  /** Why there is no global layout, said to a v1 runner that asks. */
  globalLayoutUnavailableReason?: string;
  /**
   * The backend_options keys the driver understands; the core ignores (with
   * a warning) or refuses the others before the driver sees a Create.
   */
  backendOptions: readonly string[];
}

export interface ServiceSpec {
  name: string;
  image: string;
  env: Record<string, string>;
  ports: string[];
}

/** A Create request, whatever generation it came in. */
export interface EnvironmentSpec {
  image: string;
  name: string;
  /** Environment for every command, KEY=VALUE already split. */
  env: Record<string, string>;
  workingDir: string;
  capAdd: string[];
  capDrop: string[];
  services: ServiceSpec[];
  backendOptions: Record<string, string>;
  forcePull: boolean;
  platform: string;
  labelArg: string;
  /** Upper bound on the environment's life in milliseconds, if the runner set one. */
  timeoutMs?: number;
}

/** What the core knows of one environment, handed back to its driver on every call. */
export interface EnvironmentRef<State = unknown> {
  id: string;
  /** The driver's own state for this environment (paths, container ids, pod name). */
  state: State;
}

export interface CreatedEnvironment<State = unknown> {
  /** Driver state kept by the core (and in its state file) and passed back in every EnvironmentRef. */
  state: State;
  layout: Layout;
}

export interface ExecSpec {
  command: string[];
  env: Record<string, string>;
  /** Empty: the environment's default user. */
  user: string;
  /**
   * Absolute (the core resolves relative and empty ones). The driver creates
   * it when it is missing, writable by the user the command runs as, as
   * Docker creates a container's WorkingDir.
   */
  workdir: string;
}

/**
 * How a command ended. `exited` means it ran (the code may come from a
 * signal, as 128+n); `failed` means it could not be run at all.
 */
export type ExecResult =
  { kind: "exited"; exitCode: number; message?: string } | { kind: "failed"; message: string };

/** Where a command's output goes; writes apply backpressure to the command. */
export interface ExecSinks {
  stdout: Writable;
  stderr: Writable;
}

export interface DriverContext {
  logger: Logger;
  /**
   * This berth's instance name: drivers label what they create with it, and
   * list only resources carrying it, so berths sharing a Docker engine or a
   * namespace never take each other's environments for orphans.
   */
  instance: string;
  /**
   * True for the daemon, which may claim what it uses for itself (the host
   * driver's instance directory); false for `berth gc` and `berth validate`,
   * which run beside it.
   */
  serving: boolean;
  /**
   * berth's own files and directories (its state directory, its unix
   * sockets' directories, an audit log file), which a driver that runs jobs
   * on berth's machine keeps out of their sight.
   */
  ownPaths: readonly string[];
}

/** An environment whose resources a driver found (for the reconciler). */
export interface ManagedEnvironment<State = unknown> {
  id: string;
  /** When its resources were made, as their labels say; unknown: treated as old. */
  createdAt?: Date;
  /** Enough driver state to remove it; undefined if the driver's remove needs none. */
  state: State | undefined;
}

/**
 * What every backend driver implements. The core validates requests, parses
 * env files, checks tar entries and maps errors before a driver sees
 * anything; drivers throw BerthError for failures a person can act on.
 */
export interface Driver<State = unknown> {
  /** Connect to the backend and check it can be used; throws a BerthError saying why not. */
  provision(): Promise<void>;
  capabilities(): DriverCapabilities;
  create(id: string, spec: EnvironmentSpec, signal: AbortSignal): Promise<CreatedEnvironment<State>>;
  /** Boot the environment; `progress` lines reach v1alpha runners as they happen. */
  start(
    env: EnvironmentRef<State>,
    progress: (line: string) => void,
    signal: AbortSignal,
  ): Promise<{ imageEnv: Record<string, string> }>;
  /** Run a command; aborting `signal` kills its whole process tree, the environment stays. */
  exec(
    env: EnvironmentRef<State>,
    spec: ExecSpec,
    sinks: ExecSinks,
    signal: AbortSignal,
  ): Promise<ExecResult>;
  /** Extract an already checked tar stream under destPath, creating it if missing. */
  copyIn(env: EnvironmentRef<State>, destPath: string, tar: Readable, signal: AbortSignal): Promise<void>;
  /** A tar stream of srcPath whose top-level entry is its base name; NOT_FOUND if missing. */
  copyOut(env: EnvironmentRef<State>, srcPath: string, signal: AbortSignal): Promise<Readable>;
  /** Copy a directory of the machine berth runs on into the environment (plugin.v1 CopyLocal). */
  copyLocal?(
    env: EnvironmentRef<State>,
    srcPath: string,
    destPath: string,
    signal: AbortSignal,
  ): Promise<void>;
  /** A file's content up to maxBytes, or undefined if it does not exist. */
  readFile(
    env: EnvironmentRef<State>,
    path: string,
    maxBytes: number,
    signal: AbortSignal,
  ): Promise<Buffer | undefined>;
  /** Throws if the environment is gone; returns how long to wait before asking again. */
  health(env: EnvironmentRef<State>): Promise<{ waitMs: number }>;
  /**
   * Remove everything of the environment; safe on half-created ones and
   * twice, and without state (a Create that failed, an orphan found by labels).
   */
  remove(env: EnvironmentRef<State | undefined>): Promise<void>;
  /**
   * After berth restarted: whether the environment's resources still exist,
   * so calls on it can go on; false, and berth forgets it.
   */
  adopt(env: EnvironmentRef<State>): Promise<boolean>;
  /** Every environment of this berth instance whose resources exist now, records or not. */
  listManaged(): Promise<ManagedEnvironment<State>[]>;
  /** Release connections and timers; works even if provision failed half-way. */
  cleanup(): Promise<void>;
}

/**
 * The format of the state a driver keeps for each environment, which berth's
 * state file holds across restarts. The core checks a record against it
 * before handing it back to the driver: one that does not match (a renamed
 * field, a newer format) is reported and its environment handled as an
 * orphan, never cast blindly.
 */
export interface SavedState<State> {
  /**
   * The format's number, saved with every record (records from before
   * formats had numbers count as 1). Bump it when the shape changes, and let
   * `schema` read the older shapes it replaces, so an upgrade re-adopts.
   */
  version: number;
  schema: z.ZodType<State>;
}

/** Builds a driver from its options (config values, or `key=value` strings from the command line). */
export interface DriverFactory<Options = unknown, State = unknown> {
  name: string;
  /** The driver's options: unknown keys are refused, strings from `--backend-opt` are coerced. */
  optionsSchema: z.ZodObject;
  savedState: SavedState<State>;
  create(options: Options, context: DriverContext): Driver<State>;
}
