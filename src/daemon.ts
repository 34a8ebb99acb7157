import { dirname, resolve } from "node:path";
import { createServer, type Server } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl, HealthState } from "nice-grpc-server-health";
import type { Logger } from "pino";
import { type AuditLog, openAuditLog } from "./audit.js";
import { callerInterceptor } from "./caller.js";
import type { BackendConfig, DaemonConfig } from "./config.js";
import type { DriverRegistry } from "./drivers.js";
import { type Backend, EnvironmentService } from "./environments.js";
import { BerthError, failedPrecondition, messageOf } from "./errors.js";
import { BackendPluginDefinition as V1Definition } from "./gen/plugin/v1/plugin.js";
import { BackendPluginDefinition as V1alphaDefinition } from "./gen/plugin/v1alpha/plugin.js";
import { refusingMalformedRequests } from "./protocol/malformed.js";
import { v1DataCodecs, v1alphaDataCodecs, withDataCodecs } from "./protocol/data-codecs.js";
import { parseListenAddress } from "./listen-address.js";
import { type ListenerTarget, Listeners } from "./listeners.js";
import { type HttpEndpoints, serveHttpEndpoints } from "./http-endpoints.js";
import { widenHttp2ReceiveWindows } from "./http2-windows.js";
import { reconcile } from "./reconciler.js";
import { reflectionServices } from "./reflection.js";
import { StateStore, readSavedState } from "./state-store.js";
import { Metrics } from "./metrics.js";
import { createV1Service } from "./protocol/v1.js";
import { createV1alphaService } from "./protocol/v1alpha.js";
import { middlewareChain } from "./middleware/chain.js";
import { PluginCallTracker } from "./middleware/drain.js";
import { CallerRateLimit } from "./rate-limit.js";

export interface Daemon {
  /** Provisions every backend's driver and binds every listener; throws a BerthError saying what is wrong. */
  start(): Promise<void>;
  /** Stops accepting, lets in-flight calls finish up to the grace period, then cancels them. */
  stop(): Promise<void>;
  /** Ends a running stop()'s grace period now: in-flight calls are cancelled. */
  cancelInFlight(): void;
  /**
   * Switches to a new configuration (SIGHUP): its backends are provisioned
   * first; if that fails, nothing changes and the error is thrown. Listeners
   * that stay serve the new backends, removed ones stop taking new calls and
   * finish the ones in flight, new ones are bound. Environments stay with the
   * backend instance that created them, which is cleaned up after its last
   * environment is removed.
   */
  reload(next: DaemonConfig): Promise<void>;
  /** The addresses bound, as `unix:///…` or `tcp://host:port` (the real port if 0 was asked). */
  readonly addresses: string[];
  /** The metrics listener's `host:port` (the real port if 0 was asked), if there is one. */
  readonly metricsAddress?: string;
  /** The environment service (in-process tests read its records). */
  readonly environments: EnvironmentService;
}

/**
 * Creates a backend's driver and provisions it. `made` sees the backend as
 * soon as it exists, so the caller can clean it up even if provisioning fails.
 */
export async function provisionBackend(
  config: BackendConfig,
  {
    logger,
    instance,
    drivers,
    serving,
    ownPaths = [],
  }: {
    logger: Logger;
    instance: string;
    drivers: DriverRegistry;
    serving: boolean;
    ownPaths?: readonly string[];
  },
  made: (backend: Backend) => void,
): Promise<Backend> {
  const factory = await drivers.factory(config.driver);
  const driver = factory.create(config.options, {
    logger: logger.child({ driver: factory.name, backend: config.name }),
    instance,
    serving,
    ownPaths,
  });
  const backend = {
    name: config.name,
    driver,
    savedState: factory.savedState,
    limits: config.limits,
    strictBackendOptions: config.strictBackendOptions,
  };
  made(backend);
  try {
    await driver.provision();
  } catch (err) {
    // Several backends may share a driver: say which one failed.
    if (config.name === factory.name || !(err instanceof BerthError)) throw err;
    throw new BerthError(err.code, `backend ${config.name}: ${err.message}`, { cause: err });
  }
  return backend;
}

/** The gRPC message cap each way; the runners raise theirs to 32 MiB. */
const maxMessageBytes = 64 * 1024 * 1024;

const serverOptions = {
  "grpc.max_receive_message_length": maxMessageBytes,
  "grpc.max_send_message_length": maxMessageBytes,
  // Runners ping every 30 s, also between calls.
  "grpc.keepalive_permit_without_calls": 1,
};

const pluginServiceNames = ["plugin.v1.BackendPlugin", "plugin.v1alpha.BackendPlugin"];

/**
 * Builds one berth daemon: a driver per backend, the core, and a gRPC server
 * per listener, each creating environments on its backend. Nothing runs until start().
 */
export function createDaemon({
  config,
  logger,
  drivers,
  metrics = new Metrics(),
}: {
  config: DaemonConfig;
  logger: Logger;
  drivers: DriverRegistry;
  metrics?: Metrics;
}): Daemon {
  widenHttp2ReceiveWindows();
  return new BerthDaemon(config, logger, drivers, metrics);
}

/** The state that start, reload and stop share, and the steps they are made of. */
class BerthDaemon implements Daemon {
  readonly environments: EnvironmentService;
  private readonly store: StateStore;
  private readonly health = HealthState();
  private readonly listeners: Listeners;
  private readonly calls = new PluginCallTracker();
  private readonly probes: CallerRateLimit;
  private backends = new Map<string, Backend>();
  /** Backends a reload replaced, cleaned up once their last environment is gone. */
  private readonly retired = new Set<Backend>();
  private audit: AuditLog | undefined;
  private http: HttpEndpoints | undefined;
  private ready = false;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private reconciling: Promise<unknown> = Promise.resolve();
  private endGrace: () => void = () => {};

  constructor(
    private current: DaemonConfig,
    private readonly logger: Logger,
    private readonly drivers: DriverRegistry,
    readonly metrics: Metrics,
  ) {
    this.store = new StateStore(current.stateDir, logger);
    this.environments = new EnvironmentService(logger, metrics, (records) => this.store.save(records));
    this.health.setStatus("unhealthy");
    this.probes = new CallerRateLimit(current.probesPerSecond);
    this.listeners = new Listeners(logger, (target, transport) => this.serverFor(target, transport));
    this.environments.onRemoved((backend) => {
      if (this.retired.has(backend) && this.environments.countOf(backend) === 0) {
        this.retired.delete(backend);
        void backend.driver.cleanup();
      }
    });
  }

  get addresses(): string[] {
    return this.listeners.addresses;
  }

  get metricsAddress(): string | undefined {
    return this.http?.address;
  }

  async start(): Promise<void> {
    const config = this.current;
    try {
      if (config.audit) this.audit = await openAuditLog(config.audit.destination);
      if (config.metrics) {
        this.http = await serveHttpEndpoints(config.metrics.listen, {
          metrics: this.metrics,
          ready: () => this.ready,
        });
      }
      this.useBackends(await this.provisionAll(config.backends));
      // Re-adoption ends before the reconciler first looks: nothing recorded is taken for an orphan.
      await this.adoptRecorded();
      for (const listener of config.listeners) {
        await this.listeners.bind(listener, this.backends.get(listener.backend)!);
      }
      this.startReconciler();
    } catch (err) {
      await this.stop();
      throw err instanceof BerthError ? err : failedPrecondition(messageOf(err));
    }
    this.health.setStatus("healthy");
    this.ready = true;
    this.logger.info(
      {
        addresses: this.addresses,
        backends: config.backends.map(({ name, driver }) => ({ name, driver })),
        ...(this.http ? { metrics: this.http.address } : {}),
      },
      this.servingLine(),
    );
  }

  async reload(next: DaemonConfig): Promise<void> {
    const fresh = await this.provisionAll(next.backends);
    const added = await this.listeners.retarget(next.listeners, fresh);
    await this.retireBackends();
    this.useBackends(fresh);
    for (const listener of added) await this.listeners.bind(listener, fresh.get(listener.backend)!);
    await this.switchAuditLog(next);
    if (next.metrics?.listen !== this.current.metrics?.listen) {
      this.logger.warn("metrics.listen changed: it takes effect at the next start, not on reload");
    }
    this.logger.level = next.logging.level;
    this.current = next;
    this.logger.info({ addresses: this.addresses }, `configuration reloaded; ${this.servingLine()}`);
  }

  async stop(): Promise<void> {
    this.ready = false;
    clearInterval(this.reconcileTimer);
    this.health.setStatus("unhealthy");
    for (const name of this.backends.keys()) this.health.setStatus("unhealthy", name);
    this.calls.draining = true;
    await this.awaitInFlightCalls();
    // Cancels what still runs (and health watches); cancelled calls stop their commands before we go on.
    this.listeners.forceShutdown();
    await Promise.race([this.calls.idle(), delay(cancelUnwindMs)]);
    await this.listeners.release();
    await this.reconciling;
    if (this.current.removeOnShutdown) await this.removeEnvironments();
    for (const { driver } of [...this.backends.values(), ...this.retired]) await driver.cleanup();
    await this.http?.close();
    await this.audit?.close();
  }

  cancelInFlight(): void {
    this.endGrace();
  }

  /** A listener's gRPC server: berth's middleware chain, the two plugin adapters, health and reflection. */
  private serverFor(target: Readonly<ListenerTarget>, transport: "unix" | "tcp"): Server {
    const { address } = target.config;
    const server = createServer({
      ...serverOptions,
      "grpc.max_connection_idle_ms": this.current.idleConnectionMs,
      interceptors: [callerInterceptor({ kind: transport, address })],
    }).use(
      middlewareChain({
        logger: this.logger.child({ listener: address }),
        listener: () => ({
          address: target.config.address,
          backend: target.backend.name,
          allowedClients: target.config.tls?.allowedClients,
        }),
        backendOf: (id) => this.environments.backendOf(id),
        metrics: this.metrics,
        audit: () => this.audit,
        probes: this.probes,
        calls: this.calls,
      }),
    );
    const adapterDeps = { environments: this.environments, backend: () => target.backend };
    server.add(
      refusingMalformedRequests(withDataCodecs(V1Definition, v1DataCodecs)),
      createV1Service(adapterDeps),
    );
    server.add(
      refusingMalformedRequests(withDataCodecs(V1alphaDefinition, v1alphaDataCodecs)),
      createV1alphaService(adapterDeps),
    );
    server.add(HealthDefinition, HealthServiceImpl(this.health));
    for (const { definition, implementation } of reflectionServices(pluginServiceNames)) {
      server.add(definition, implementation);
    }
    return server;
  }

  /** Provisions every backend of a configuration, or, if one fails, cleans up those already made. */
  private async provisionAll(configs: BackendConfig[]): Promise<Map<string, Backend>> {
    const made = new Map<string, Backend>();
    const deps = {
      logger: this.logger,
      instance: this.current.instance,
      drivers: this.drivers,
      serving: true,
      ownPaths: ownPathsOf(this.current),
    };
    try {
      for (const backendConfig of configs) {
        await provisionBackend(backendConfig, deps, (backend) => made.set(backend.name, backend));
      }
    } catch (err) {
      for (const backend of made.values()) await backend.driver.cleanup();
      throw err;
    }
    return made;
  }

  /** Makes these the backends that listeners and the reconciler use; health says which are served. */
  private useBackends(next: Map<string, Backend>): void {
    for (const name of this.backends.keys()) if (!next.has(name)) this.health.setStatus("unhealthy", name);
    for (const name of next.keys()) {
      this.health.setStatus("healthy", name);
      this.metrics.environmentsActive.inc({ backend: name }, 0);
    }
    this.backends = next;
  }

  /** Cleans up the backends a reload replaces, now or, if they still have environments, after the last. */
  private async retireBackends(): Promise<void> {
    for (const previous of this.backends.values()) {
      if (this.environments.countOf(previous) === 0) await previous.driver.cleanup();
      else this.retired.add(previous);
    }
  }

  private async switchAuditLog(next: DaemonConfig): Promise<void> {
    if (next.audit?.destination === this.current.audit?.destination) return;
    const previous = this.audit;
    this.audit = next.audit ? await openAuditLog(next.audit.destination) : undefined;
    await previous?.close();
  }

  /** Takes up the environments of berth's last run whose resources still exist. */
  private async adoptRecorded(): Promise<void> {
    for (const record of await this.store.load()) {
      const backend = this.backends.get(record.backend);
      const log = this.logger.child({ environmentId: record.id, backend: record.backend });
      if (!backend) {
        log.warn("a recorded environment's backend is not configured any more: forgotten");
        continue;
      }
      const saved = readSavedState(backend.savedState, record);
      if ("problem" in saved) {
        log.warn(
          { problem: saved.problem },
          "a recorded environment's driver state is not in a format this berth reads: forgotten, so the reconciler removes its resources as an orphan",
        );
        continue;
      }
      const exists = await backend.driver
        .adopt({ id: record.id, state: saved.state })
        .catch((err: unknown) => {
          log.warn({ err: messageOf(err) }, "cannot check a recorded environment: forgotten");
          return false;
        });
      if (exists) {
        this.environments.adopt(backend, { ...record, state: saved.state });
        log.info("environment of berth's last run taken up again");
      } else log.info("a recorded environment's resources are gone: forgotten");
    }
    await this.store.save(this.environments.records());
  }

  private startReconciler(): void {
    void this.reconcileNow();
    this.reconcileTimer = setInterval(() => void this.reconcileNow(), this.current.reconciler.intervalMs);
    this.reconcileTimer.unref();
  }

  /** One reconciler pass over the current backends (passes never overlap). */
  private reconcileNow(): Promise<unknown> {
    this.reconciling = this.reconciling.then(async () => {
      const removals = await reconcile({
        backends: [...this.backends.values()],
        isLive: (id) => this.environments.knows(id),
        removeLive: (found) => this.environments.remove(found.id),
        orphanGraceMs: this.current.reconciler.orphanGraceMs,
        maxAgeMs: this.current.reconciler.maxAgeMs,
        logger: this.logger,
      });
      for (const removal of removals) {
        if (!removal.error)
          this.metrics.reconcilerRemovals.inc({ backend: removal.backend, reason: removal.reason });
      }
    });
    return this.reconciling;
  }

  /** Waits for the plugin calls in flight, up to the grace period or until cancelInFlight() ends it. */
  private async awaitInFlightCalls(): Promise<void> {
    const graceMs = this.current.shutdownGraceMs;
    const graceOver = new Promise<"grace-over">((resolve) => {
      const timer = setTimeout(() => resolve("grace-over"), graceMs);
      this.endGrace = () => {
        clearTimeout(timer);
        resolve("grace-over");
      };
    });
    if ((await Promise.race([this.calls.idle(), graceOver])) === "grace-over") {
      this.logger.warn({ graceMs }, "in-flight calls did not finish in the grace period; cancelling them");
    }
    this.endGrace();
  }

  private async removeEnvironments(): Promise<void> {
    for (const { id } of this.environments.live()) {
      await this.environments
        .remove(id)
        .catch((err: unknown) =>
          this.logger.error(
            { environmentId: id, err: messageOf(err) },
            "cannot remove an environment at shutdown",
          ),
        );
    }
  }

  private servingLine(): string {
    return `berth serving on ${this.listeners.describe()}`;
  }
}

/** The paths of berth itself that jobs on its machine must not see: state, sockets' directories, audit file. */
function ownPathsOf(config: DaemonConfig): string[] {
  const paths = [config.stateDir];
  for (const listener of config.listeners) {
    const address = parseListenAddress(listener.address);
    if (address.kind === "unix") paths.push(dirname(address.path));
  }
  const audit = config.audit?.destination;
  if (audit && audit !== "stdout" && audit !== "stderr") paths.push(resolve(audit));
  return paths;
}

/** How long cancelled calls get to unwind (kill their commands) before the driver is cleaned up. */
const cancelUnwindMs = 10_000;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
