/**
 * berth's configuration: a YAML file validated with zod (unknown keys are
 * refused), command-line flags laid over it (flags win), and the checks that
 * need more than one key (which backend a listener serves, the driver's own
 * options, readable TLS files). Every problem names the file, line and key.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { LineCounter, isMap, isPair, isScalar, isSeq, parseDocument, type Document, type Node } from "yaml";
import { z } from "zod";
import { type BackendLimits, limitedRpcs } from "./backend-limits.js";
import type { DriverRegistry, LoadedDriver } from "./drivers.js";
import { BerthError, Status, messageOf } from "./errors.js";
import { defaultListen, isLoopbackHost, parseListenAddress } from "./listen-address.js";
import type { LogLevel } from "./logger.js";

export { limitedRpcs, type LimitedRpc } from "./backend-limits.js";

const logLevels = ["trace", "debug", "info", "warn", "error", "fatal"] as const;

const tlsSchema = z
  .object({
    cert: z.string().min(1),
    key: z.string().min(1),
    clientCa: z.string().min(1).optional(),
    allowedClients: z.array(z.string().min(1)).min(1).optional(),
    reloadSeconds: z.number().positive().default(60),
  })
  .strict();

const socketSchema = z
  .object({
    mode: z
      .string()
      .regex(/^0?[0-7]{3}$/, 'expected an octal mode as a string, e.g. "0660"')
      .default("0660"),
    owner: z.union([z.string().min(1), z.number().int().nonnegative()]).optional(),
    group: z.union([z.string().min(1), z.number().int().nonnegative()]).optional(),
  })
  .strict();

const listenerSchema = z
  .object({
    address: z.string().min(1),
    backend: z.string().min(1).optional(),
    tls: tlsSchema.optional(),
    insecure: z.boolean().default(false),
    socket: socketSchema.optional(),
  })
  .strict();

const limitsSchema = z
  .object({
    /** Default 24: below the 31 bridge networks a Docker engine's default address pools hold. */
    maxEnvironments: z.number().int().positive().default(24),
    /** How long a Create at maxEnvironments waits for an environment to be removed; 0: refuse at once. */
    createWaitSeconds: z.number().nonnegative().default(300),
    maxCopyInBytes: z.number().int().positive().optional(),
    rpcTimeoutSeconds: z
      .object(Object.fromEntries(limitedRpcs.map((rpc) => [rpc, z.number().positive().optional()])))
      .strict()
      .default({}),
  })
  .strict();

/** A backend's limits when it gives none (a fresh object each time: callers own what they get). */
function defaultLimits(): z.infer<typeof limitsSchema> {
  return { rpcTimeoutSeconds: {}, createWaitSeconds: 300, maxEnvironments: 24 };
}

const backendSchema = z
  .object({
    driver: z.string().min(1),
    options: z.record(z.string(), z.unknown()).default({}),
    limits: limitsSchema.default(defaultLimits),
    /** Refuse backend_options the driver does not know, instead of ignoring them with a warning. */
    strictBackendOptions: z.boolean().default(false),
  })
  .strict();

const backendName = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** An instance name goes into labels, so it is a DNS label. */
const instanceName = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const instanceNameRule = "lower-case letters, digits and '-', at most 63";

export const configSchema = z
  .object({
    listeners: z.array(listenerSchema).min(1).optional(),
    backends: z
      .record(
        z.string().regex(backendName, "a backend name is lower-case letters, digits and '-'"),
        backendSchema,
      )
      .optional(),
    logging: z
      .object({
        level: z.enum(logLevels).default("info"),
        format: z.enum(["auto", "json", "pretty"]).default("auto"),
      })
      .strict()
      .default({ level: "info", format: "auto" }),
    metrics: z
      .object({ listen: z.string().min(1) })
      .strict()
      .optional(),
    audit: z
      .object({ destination: z.string().min(1) })
      .strict()
      .optional(),
    shutdownGraceSeconds: z.number().nonnegative().default(10),
    /** A connection with no call in flight for this long is closed (the runner reconnects by itself). */
    idleConnectionSeconds: z.number().positive().default(300),
    /** Health checks and Capabilities calls one caller may make a second (burst: twice); 0: no limit. */
    probesPerSecond: z.number().nonnegative().default(100),
    /** Remove every environment when berth stops, instead of keeping them for the next start. */
    removeOnShutdown: z.boolean().default(false),
    /** Where berth keeps its records of environments (re-adopted after a restart). */
    stateDir: z.string().min(1).default(".berth"),
    /** This berth's name on what it creates (labels); berths sharing an engine or namespace need different ones. */
    instance: z.string().regex(instanceName, instanceNameRule).default("berth"),
    reconciler: z
      .object({
        intervalSeconds: z.number().positive().default(300),
        orphanGraceSeconds: z.number().nonnegative().default(120),
        maxAgeSeconds: z.number().positive().optional(),
      })
      .strict()
      .default({ intervalSeconds: 300, orphanGraceSeconds: 120 }),
  })
  .strict();

export type FileConfig = z.infer<typeof configSchema>;

/** The command-line flags of `berth serve`; each has a key in the file, and wins over it. */
export interface ServeFlags {
  config?: string;
  backend?: string;
  backendOpt: Record<string, string>;
  listen: string[];
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  insecure?: boolean;
  logLevel?: LogLevel;
  shutdownGrace?: number;
  metricsListen?: string;
  auditLog?: string;
  stateDir?: string;
  instance?: string;
}

export interface TlsConfig {
  cert: string;
  key: string;
  /** Makes client certificates mandatory and verified against this CA (mutual TLS). */
  clientCa?: string;
  /** Client identities (a SAN such as `DNS:runner-1`, `URI:spiffe://…`, or the subject's CN) allowed in. */
  allowedClients?: string[];
  /** How often the files are read again, so rotated certificates take effect without a restart. */
  reloadSeconds: number;
}

export interface ListenerConfig {
  address: string;
  /** Name of the backend whose environments this listener creates. */
  backend: string;
  tls?: TlsConfig;
  /** Plain TCP without TLS; refused unless the address is loopback. */
  insecure?: boolean;
  socketMode?: number;
  socketOwner?: string | number;
  socketGroup?: string | number;
}

export interface BackendConfig {
  name: string;
  driver: string;
  /** The driver's options, as its schema parsed them. */
  options: unknown;
  /** Refuse backend_options the driver does not know, instead of ignoring them with a warning. */
  strictBackendOptions: boolean;
  limits: BackendLimits;
}

/** Everything a daemon is built from. */
export interface DaemonConfig {
  backends: BackendConfig[];
  listeners: ListenerConfig[];
  /** How long in-flight calls may finish after a shutdown begins before they are cancelled. */
  shutdownGraceMs: number;
  /** A connection without calls this long is closed. */
  idleConnectionMs: number;
  /** Health checks and Capabilities calls a caller may make a second; 0: no limit. */
  probesPerSecond: number;
  logging: { level: LogLevel; format: "auto" | "json" | "pretty" };
  metrics?: { listen: string };
  audit?: { destination: string };
  removeOnShutdown: boolean;
  stateDir: string;
  instance: string;
  reconciler: { intervalMs: number; orphanGraceMs: number; maxAgeMs?: number };
}

/** A configuration that cannot be used: every problem, each with where it is. */
export class ConfigError extends BerthError {
  constructor(readonly problems: string[]) {
    super(Status.INVALID_ARGUMENT, `invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

/** Where a key is: the file's line and column, or the command line. */
class Locator {
  constructor(
    private readonly file: string | undefined,
    private readonly document: Document | undefined,
    private readonly lines: LineCounter,
  ) {}

  /**
   * `file:line:col: key` for a path in the file (or its nearest enclosing key
   * there), `command line: key` for what the flags set.
   */
  at(path: readonly PropertyKey[], options: { keyOnly?: boolean; fromFlags?: boolean } = {}): string {
    const key = formatPath(path);
    if (options.fromFlags || this.file === undefined || this.document === undefined) {
      return `command line: ${key}`;
    }
    const node = nodeAt(this.document, path, options.keyOnly ?? false);
    if (!node?.range) return `${this.file}: ${key}`;
    const { line, col } = this.lines.linePos(node.range[0]);
    return `${this.file}:${line}:${col}: ${key}`;
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  return (
    path
      .map((part) => (typeof part === "number" ? `[${part}]` : `.${String(part)}`))
      .join("")
      .replace(/^\./, "") || "(top level)"
  );
}

/** The YAML node at a path; for keyOnly, the key of the last step (for unknown keys). */
function nodeAt(document: Document, path: readonly PropertyKey[], keyOnly: boolean): Node | undefined {
  let node: unknown = document.contents;
  let last: Node | undefined = node as Node | undefined;
  for (const [index, part] of path.entries()) {
    if (isMap(node)) {
      const pair = node.items.find((item) => isPair(item) && isScalar(item.key) && item.key.value === part);
      if (!pair) return last;
      if (keyOnly && index === path.length - 1) return pair.key as Node;
      node = pair.value;
    } else if (isSeq(node) && typeof part === "number") {
      node = node.items[part];
    } else return last;
    if (node && typeof node === "object" && "range" in node) last = node as Node;
  }
  return last;
}

/** Issues of a zod parse as located problems. */
function zodProblems(error: z.ZodError, locate: Locator): string[] {
  return error.issues.flatMap((issue) => {
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((key) => `${locate.at([...issue.path, key], { keyOnly: true })}: unknown key`);
    }
    return [`${locate.at(issue.path)}: ${issue.message}`];
  });
}

/** The known option names of a driver, for "unknown key" messages. */
function knownOptions(factory: LoadedDriver): string {
  return Object.keys(factory.optionsSchema.shape).join(", ");
}

/** Reads and parses the file, collecting YAML syntax errors with their lines. */
function readConfigFile(file: string): { document: Document; lines: LineCounter; value: unknown } {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError([`${file}: cannot read the configuration file: ${messageOf(err)}`]);
  }
  const lines = new LineCounter();
  const document = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const problems = document.errors.map((err) => {
    const { line, col } = lines.linePos(err.pos[0]);
    return `${file}:${line}:${col}: ${err.message.split("\n")[0]}`;
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return { document, lines, value: document.toJS() ?? {} };
}

/** A backend as the file and the flags give it, before its driver has read its options. */
type MergedBackend = z.infer<typeof backendSchema> & {
  /** Made for --backend, not in the file: its problems are the command line's. */
  fromFlags: boolean;
  /** The options --backend-opt set, so that their problems name the flag. */
  flagOptions: Set<string>;
};

/** A listener as the file or the flags give it. */
type MergedListener = z.infer<typeof listenerSchema> & { fromFlags: boolean };

/** What resolving a listener needs besides the listener. */
interface ListenerContext {
  locate: Locator;
  /** Every backend's name, also of those whose driver or options are wrong. */
  backendNames: string[];
  flagTls: TlsConfig | undefined;
  insecureFlag: boolean;
  checkFiles: boolean;
}

/**
 * Loads the configuration: the file (if any), then the flags over it, then
 * every check that needs the whole (listeners' backends, drivers and their
 * options, and unless checkFiles is false, that TLS files can be read).
 * Throws a ConfigError listing every problem.
 */
export async function loadConfig(
  flags: ServeFlags,
  drivers: DriverRegistry,
  { checkFiles = true }: { checkFiles?: boolean } = {},
): Promise<DaemonConfig> {
  const { fileConfig, locate } = validatedFileConfig(flags.config);
  const { backends, soleBackend } = mergeBackends(fileConfig.backends, flags.backend);
  const problems = applyBackendOptFlags(backends.get(soleBackend ?? ""), flags.backendOpt);
  const listeners = mergeListeners(fileConfig.listeners, flags.listen, soleBackend);
  const flagTls = flagTlsConfig(flags);
  problems.push(...flagProblems(flags.instance, flagTls));
  const resolvedBackends = await resolveBackends(backends, drivers, locate, problems);
  const listenerContext: ListenerContext = {
    locate,
    backendNames: [...backends.keys()],
    flagTls,
    insecureFlag: flags.insecure === true,
    checkFiles,
  };
  const resolvedListeners = listeners.flatMap(
    (listener, index) => resolveListener(listener, index, listenerContext, problems) ?? [],
  );
  problems.push(...duplicateAddressProblems(listeners, locate));
  if (problems.length > 0) throw new ConfigError(problems);
  return assembleDaemonConfig(fileConfig, flags, resolvedBackends, resolvedListeners);
}

/** The file's configuration (the defaults without a file), and where each of its keys is. */
function validatedFileConfig(file: string | undefined): { fileConfig: FileConfig; locate: Locator } {
  const parsed = file ? readConfigFile(file) : undefined;
  const locate = new Locator(file, parsed?.document, parsed?.lines ?? new LineCounter());
  const result = configSchema.safeParse(parsed?.value ?? {});
  if (!result.success) throw new ConfigError(zodProblems(result.error, locate));
  return { fileConfig: result.data, locate };
}

/**
 * The file's backends, and the one --backend names if the file has none by
 * that name (host if neither names one). soleBackend is the one that flags
 * and listeners without a backend of their own are for, if there is one.
 */
function mergeBackends(
  fileBackends: FileConfig["backends"],
  backendFlag: string | undefined,
): { backends: Map<string, MergedBackend>; soleBackend: string | undefined } {
  const backends = new Map<string, MergedBackend>(
    Object.entries(fileBackends ?? {}).map(([name, backend]) => [
      name,
      { ...backend, fromFlags: false, flagOptions: new Set<string>() },
    ]),
  );
  const flagBackend = backendFlag ?? (backends.size === 0 ? "host" : undefined);
  if (flagBackend !== undefined && !backends.has(flagBackend)) {
    backends.set(flagBackend, {
      driver: flagBackend,
      options: {},
      limits: defaultLimits(),
      strictBackendOptions: false,
      fromFlags: true,
      flagOptions: new Set(),
    });
  }
  const soleBackend = flagBackend ?? (backends.size === 1 ? [...backends.keys()][0] : undefined);
  return { backends, soleBackend };
}

/** Lays the --backend-opt options over the sole backend's; the problems, if there is no sole backend. */
function applyBackendOptFlags(
  target: MergedBackend | undefined,
  backendOpt: Record<string, string>,
): string[] {
  if (Object.keys(backendOpt).length === 0) return [];
  if (target === undefined) {
    return ["command line: --backend-opt: the file has several backends; say which with --backend"];
  }
  target.options = { ...target.options, ...backendOpt };
  for (const key of Object.keys(backendOpt)) target.flagOptions.add(key);
  return [];
}

/**
 * --listen replaces the file's listeners; flag listeners, and file ones that
 * name no backend, serve the sole backend.
 */
function mergeListeners(
  fileListeners: FileConfig["listeners"],
  listen: string[],
  soleBackend: string | undefined,
): MergedListener[] {
  if (listen.length > 0 || !fileListeners) {
    return (listen.length > 0 ? listen : [defaultListen]).map((address) => ({
      address,
      backend: soleBackend,
      insecure: false,
      fromFlags: true,
    }));
  }
  return fileListeners.map((listener) => ({
    ...listener,
    backend: listener.backend ?? soleBackend,
    fromFlags: false,
  }));
}

/** The TLS that --tls-cert and --tls-key give every listener not on a unix socket, instead of the file's. */
function flagTlsConfig(flags: ServeFlags): TlsConfig | undefined {
  if (flags.tlsCert === undefined && flags.tlsKey === undefined) return undefined;
  return {
    cert: flags.tlsCert ?? "",
    key: flags.tlsKey ?? "",
    clientCa: flags.tlsClientCa,
    reloadSeconds: 60,
  };
}

/** What is wrong with flags that no schema parses. */
function flagProblems(instance: string | undefined, flagTls: TlsConfig | undefined): string[] {
  const problems: string[] = [];
  if (instance !== undefined && !instanceName.test(instance)) {
    problems.push(`command line: --instance ${instance}: ${instanceNameRule}`);
  }
  if (flagTls && (!flagTls.cert || !flagTls.key)) {
    problems.push("command line: --tls-cert and --tls-key go together");
  }
  return problems;
}

/** The backends whose drivers exist and accept their options; the problems of the others go to problems. */
async function resolveBackends(
  backends: Map<string, MergedBackend>,
  drivers: DriverRegistry,
  locate: Locator,
  problems: string[],
): Promise<BackendConfig[]> {
  const resolved: BackendConfig[] = [];
  for (const [name, backend] of backends) {
    const path = ["backends", name];
    if (!drivers.has(backend.driver)) {
      problems.push(
        `${locate.at([...path, "driver"], { fromFlags: backend.fromFlags })}: unknown driver "${backend.driver}" (berth has: ${drivers.names().join(", ")})`,
      );
      continue;
    }
    const factory = await drivers.factory(backend.driver);
    const options = factory.optionsSchema.strict().safeParse(backend.options);
    if (!options.success) {
      problems.push(...driverOptionProblems(options.error, backend, factory, path, locate));
      continue;
    }
    resolved.push({
      name,
      driver: factory.name,
      options: options.data,
      strictBackendOptions: backend.strictBackendOptions,
      limits: limitsInMs(backend.limits),
    });
  }
  return resolved;
}

/** The issues a driver's schema found in a backend's options, each at the flag or key that set it. */
function driverOptionProblems(
  error: z.ZodError,
  backend: MergedBackend,
  factory: LoadedDriver,
  path: PropertyKey[],
  locate: Locator,
): string[] {
  return error.issues.flatMap((issue) => {
    const unknownKey = issue.code === "unrecognized_keys";
    const keys = unknownKey ? issue.keys : [String(issue.path[0] ?? "")];
    return keys.map((key) => {
      const where = backend.flagOptions.has(key)
        ? `command line: --backend-opt ${key}`
        : locate.at([...path, "options", ...(unknownKey ? [key] : issue.path)], {
            keyOnly: unknownKey,
            fromFlags: backend.fromFlags,
          });
      return unknownKey
        ? `${where}: unknown option of driver ${factory.name} (known: ${knownOptions(factory)})`
        : `${where}: ${issue.message}`;
    });
  });
}

function limitsInMs(limits: z.infer<typeof limitsSchema>): BackendLimits {
  return {
    maxEnvironments: limits.maxEnvironments,
    createWaitMs: Math.round(limits.createWaitSeconds * 1000),
    maxCopyInBytes: limits.maxCopyInBytes,
    rpcTimeoutMs: Object.fromEntries(
      Object.entries(limits.rpcTimeoutSeconds)
        .filter(([, seconds]) => seconds !== undefined)
        .map(([rpc, seconds]) => [rpc, Math.round((seconds as number) * 1000)]),
    ),
  };
}

/** The listener as the daemon opens it, or undefined with its problems pushed onto problems. */
function resolveListener(
  listener: MergedListener,
  index: number,
  { locate, backendNames, flagTls, insecureFlag, checkFiles }: ListenerContext,
  problems: string[],
): ListenerConfig | undefined {
  const path = ["listeners", index];
  const at = (...keys: PropertyKey[]) => locate.at([...path, ...keys], { fromFlags: listener.fromFlags });
  let address;
  try {
    address = parseListenAddress(listener.address);
  } catch (err) {
    problems.push(`${at("address")}: ${messageOf(err)}`);
    return undefined;
  }
  if (listener.backend === undefined) {
    problems.push(
      `${at()}: say which backend this listener serves (backend: one of ${backendNames.join(", ")})`,
    );
    return undefined;
  }
  if (!backendNames.includes(listener.backend)) {
    problems.push(
      `${at("backend")}: no backend "${listener.backend}" (there are: ${backendNames.join(", ") || "none"})`,
    );
    return undefined;
  }
  // A socket from systemd may be TCP: TLS applies if configured (the daemon checks which it is).
  const tls = address.kind !== "unix" ? (flagTls ?? listener.tls) : undefined;
  const insecure = insecureFlag || listener.insecure;
  if (address.kind === "tcp") {
    const problem = tcpListenerProblem(listener.address, address.host, tls, insecure);
    if (problem) problems.push(`${at()}: ${problem}`);
  }
  if (tls && checkFiles) {
    const tlsFromFlags = listener.fromFlags || flagTls !== undefined;
    problems.push(...unreadableTlsFiles(tls, path, tlsFromFlags, locate));
  }
  if (tls?.allowedClients && !tls.clientCa) {
    problems.push(
      `${at("tls", "allowedClients")}: needs clientCa: identities come from verified client certificates`,
    );
  }
  return {
    address: listener.address,
    backend: listener.backend,
    ...(tls ? { tls } : {}),
    insecure,
    socketMode: Number.parseInt(listener.socket?.mode ?? "0660", 8),
    socketOwner: listener.socket?.owner,
    socketGroup: listener.socket?.group,
  };
}

/** A problem for each TLS file of a listener that cannot be read. */
function unreadableTlsFiles(
  tls: TlsConfig,
  path: PropertyKey[],
  fromFlags: boolean,
  locate: Locator,
): string[] {
  const problems: string[] = [];
  for (const key of ["cert", "key", "clientCa"] as const) {
    const tlsFile = tls[key];
    if (tlsFile === undefined || tlsFile === "") continue;
    try {
      readFileSync(tlsFile);
    } catch (err) {
      problems.push(
        `${locate.at([...path, "tls", key], { fromFlags })}: cannot read TLS file ${tlsFile}: ${messageOf(err)}`,
      );
    }
  }
  return problems;
}

function duplicateAddressProblems(listeners: MergedListener[], locate: Locator): string[] {
  const addresses = listeners.map((listener) => listener.address);
  return addresses.flatMap((address, index) =>
    addresses.indexOf(address) === index
      ? []
      : [
          `${locate.at(["listeners", index, "address"], { fromFlags: listeners[index].fromFlags })}: ${address} is listed twice`,
        ],
  );
}

/** The daemon's configuration from checked parts: flags win over the file; unserved backends are left out. */
function assembleDaemonConfig(
  fileConfig: FileConfig,
  flags: ServeFlags,
  backends: BackendConfig[],
  listeners: ListenerConfig[],
): DaemonConfig {
  return {
    backends: backends.filter((backend) => listeners.some((listener) => listener.backend === backend.name)),
    listeners,
    shutdownGraceMs: (flags.shutdownGrace ?? fileConfig.shutdownGraceSeconds) * 1000,
    idleConnectionMs: Math.round(fileConfig.idleConnectionSeconds * 1000),
    probesPerSecond: fileConfig.probesPerSecond,
    logging: { level: flags.logLevel ?? fileConfig.logging.level, format: fileConfig.logging.format },
    removeOnShutdown: fileConfig.removeOnShutdown,
    stateDir: resolve(flags.stateDir ?? fileConfig.stateDir),
    instance: flags.instance ?? fileConfig.instance,
    reconciler: {
      intervalMs: fileConfig.reconciler.intervalSeconds * 1000,
      orphanGraceMs: fileConfig.reconciler.orphanGraceSeconds * 1000,
      ...(fileConfig.reconciler.maxAgeSeconds === undefined
        ? {}
        : { maxAgeMs: fileConfig.reconciler.maxAgeSeconds * 1000 }),
    },
    ...((flags.metricsListen ?? fileConfig.metrics)
      ? { metrics: { listen: flags.metricsListen ?? fileConfig.metrics!.listen } }
      : {}),
    ...((flags.auditLog ?? fileConfig.audit)
      ? { audit: { destination: flags.auditLog ?? fileConfig.audit!.destination } }
      : {}),
  };
}

/**
 * Why a TCP listener may not start, or undefined: TCP needs TLS, and plain
 * TCP (insecure) is only allowed on loopback addresses.
 */
export function tcpListenerProblem(
  address: string,
  host: string,
  tls: TlsConfig | undefined,
  insecure: boolean,
): string | undefined {
  if (tls) return undefined;
  if (!insecure) {
    return `listener ${address} is TCP without TLS; give --tls-cert and --tls-key (and --tls-client-ca for mutual TLS), or --insecure on a loopback address`;
  }
  if (!isLoopbackHost(host)) {
    return `refusing plain TCP on ${host}: --insecure is only allowed on loopback addresses (127.0.0.1, ::1, localhost); anyone who reaches this address could run commands. Use TLS with --tls-client-ca instead`;
  }
  return undefined;
}
