import { dirname, resolve } from "node:path";
import { createServer, type Server } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl, HealthState } from "nice-grpc-server-health";
import { ServerReflection, ServerReflectionService } from "nice-grpc-server-reflection";
import type { Logger } from "pino";
import { type AuditLog, openAuditLog } from "./audit.js";
import { callerInterceptor } from "./caller.js";
import type { BackendConfig, DaemonConfig } from "./config.js";
import type { DriverRegistry } from "./drivers.js";
import { type Backend, EnvironmentService } from "./environments.js";
import { BerthError, failedPrecondition, messageOf } from "./errors.js";
import { descriptorSet } from "./gen/descriptor-set.js";
import { BackendPluginDefinition as V1Definition } from "./gen/plugin/v1/plugin.js";
import { BackendPluginDefinition as V1alphaDefinition } from "./gen/plugin/v1alpha/plugin.js";
import { refusingMalformedRequests } from "./protocol/malformed.js";
import { parseListenAddress } from "./listen-address.js";
import { type ListenerTarget, Listeners } from "./listeners.js";
import { type HttpEndpoints, serveHttpEndpoints } from "./http-endpoints.js";
import { reconcile } from "./reconciler.js";
import { StateStore, readSavedState } from "./state-store.js";
import { Metrics } from "./metrics.js";
import { createV1Service } from "./protocol/v1.js";
import { createV1alphaService } from "./protocol/v1alpha.js";
import { allowListMiddleware } from "./middleware/allow-list.js";
import { callContextMiddleware } from "./middleware/call-context.js";
import { PluginCallTracker, drainMiddleware } from "./middleware/drain.js";
import { errorStatusMiddleware } from "./middleware/error-status.js";
import { malformedRequestMiddleware } from "./middleware/malformed-requests.js";
import { observeMiddleware } from "./middleware/observe.js";
import { probeRateLimitMiddleware } from "./middleware/probe-rate-limit.js";
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
  readonly environments: EnvironmentService;
  readonly metrics: Metrics;
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
  made: (backend: Backend) => void = () => {},
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
 * Reflection's older generation, grpc.reflection.v1alpha, which grpcurl
 * before 1.8.8 and other older tools ask for: the same messages as v1 under
 * another package, so the same implementation serves it.
 */
const v1alphaReflectionService = Object.fromEntries(
  Object.entries(ServerReflectionService).map(([name, method]) => [
    name,
    { ...method, path: method.path.replace("/grpc.reflection.v1.", "/grpc.reflection.v1alpha.") },
  ]),
) as typeof ServerReflectionService;

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
  const store = new StateStore(config.stateDir, logger);
  const environments = new EnvironmentService(logger, metrics, (records) => store.save(records));
  const health = HealthState();
  health.setStatus("unhealthy");
  const calls = new PluginCallTracker();
  const probes = new CallerRateLimit(config.probesPerSecond);
  let endGrace: () => void = () => {};
  let current = config;
  let backends = new Map<string, Backend>();
  /** Backends a reload replaced, cleaned up once their last environment is gone. */
  const retired = new Set<Backend>();
  let audit: AuditLog | undefined;
  let http: HttpEndpoints | undefined;
  let ready = false;
  let reconcileTimer: NodeJS.Timeout | undefined;
  let reconciling: Promise<unknown> = Promise.resolve();

  /** One reconciler pass over the current backends (passes never overlap). */
  function reconcileNow(): Promise<unknown> {
    reconciling = reconciling.then(async () => {
      const removals = await reconcile({
        backends: [...backends.values()],
        isLive: (id) => environments.knows(id),
        removeLive: (found) => environments.remove(found.id),
        orphanGraceMs: current.reconciler.orphanGraceMs,
        maxAgeMs: current.reconciler.maxAgeMs,
        logger,
      });
      for (const removal of removals) {
        if (!removal.error)
          metrics.reconcilerRemovals.inc({ backend: removal.backend, reason: removal.reason });
      }
    });
    return reconciling;
  }

  /** Takes up the environments of berth's last run whose resources still exist. */
  async function adoptRecorded(): Promise<void> {
    for (const record of await store.load()) {
      const backend = backends.get(record.backend);
      const log = logger.child({ environmentId: record.id, backend: record.backend });
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
        environments.adopt(backend, { ...record, state: saved.state });
        log.info("environment of berth's last run taken up again");
      } else log.info("a recorded environment's resources are gone: forgotten");
    }
    await store.save(environments.records());
  }

  environments.onRemoved((backend) => {
    if (retired.has(backend) && environments.countOf(backend) === 0) {
      retired.delete(backend);
      void backend.driver.cleanup();
    }
  });

  async function provisionAll(configs: BackendConfig[]): Promise<Map<string, Backend>> {
    const made = new Map<string, Backend>();
    try {
      for (const backendConfig of configs) {
        await provisionBackend(
          backendConfig,
          { logger, instance: current.instance, drivers, serving: true, ownPaths: ownPathsOf(current) },
          (backend) => made.set(backend.name, backend),
        );
      }
    } catch (err) {
      for (const backend of made.values()) await backend.driver.cleanup();
      throw err;
    }
    return made;
  }

  function useBackends(next: Map<string, Backend>): void {
    for (const name of backends.keys()) if (!next.has(name)) health.setStatus("unhealthy", name);
    for (const name of next.keys()) {
      health.setStatus("healthy", name);
      metrics.environmentsActive.inc({ backend: name }, 0);
    }
    backends = next;
  }

  /**
   * A listener's gRPC server. The middlewares run in this order: the call's
   * context; observing it, outside the error boundary, so metrics, the debug
   * line and the audit record see the status the client got, refusals
   * included; the one error boundary; then the refusals, in the order their
   * statuses take precedence; the malformed-request check last, as it is the
   * request itself that goes on to the adapter.
   */
  function serverFor(target: ListenerTarget, transport: "unix" | "tcp"): Server {
    const { address } = target.config;
    const server = createServer({
      ...serverOptions,
      "grpc.max_connection_idle_ms": current.idleConnectionMs,
      interceptors: [callerInterceptor({ kind: transport, address })],
    })
      .use(
        callContextMiddleware({
          logger: logger.child({ listener: address }),
          listener: () => ({
            address: target.config.address,
            backend: target.backend.name,
            allowedClients: target.config.tls?.allowedClients,
          }),
          backendOf: (id) => environments.backendOf(id),
        }),
      )
      .use(observeMiddleware({ metrics, audit: () => audit }))
      .use(errorStatusMiddleware)
      .use(allowListMiddleware)
      .use(probeRateLimitMiddleware(probes))
      .use(drainMiddleware(calls))
      .use(malformedRequestMiddleware);
    const adapterDeps = { environments, backend: () => target.backend };
    server.add(refusingMalformedRequests(V1Definition), createV1Service(adapterDeps));
    server.add(refusingMalformedRequests(V1alphaDefinition), createV1alphaService(adapterDeps));
    server.add(HealthDefinition, HealthServiceImpl(health));
    const reflection = ServerReflection(descriptorSet, pluginServiceNames);
    server.add(ServerReflectionService, reflection);
    server.add(v1alphaReflectionService, reflection);
    return server;
  }
  const listeners = new Listeners(logger, serverFor);

  function servingLine(): string {
    return `berth serving on ${listeners.describe()}`;
  }

  return {
    get addresses() {
      return listeners.addresses;
    },
    environments,
    metrics,
    get metricsAddress() {
      return http?.address;
    },
    async start() {
      try {
        if (config.audit) audit = await openAuditLog(config.audit.destination);
        if (config.metrics) {
          http = await serveHttpEndpoints(config.metrics.listen, { metrics, ready: () => ready });
        }
        useBackends(await provisionAll(config.backends));
        // Re-adoption ends before the reconciler first looks: nothing recorded is taken for an orphan.
        await adoptRecorded();
        for (const listener of config.listeners) {
          await listeners.bind(listener, backends.get(listener.backend)!);
        }
        void reconcileNow();
        reconcileTimer = setInterval(() => void reconcileNow(), config.reconciler.intervalMs);
        reconcileTimer.unref();
      } catch (err) {
        await this.stop();
        throw err instanceof BerthError ? err : failedPrecondition(messageOf(err));
      }
      health.setStatus("healthy");
      ready = true;
      logger.info(
        {
          addresses: this.addresses,
          backends: config.backends.map(({ name, driver }) => ({ name, driver })),
          ...(http ? { metrics: http.address } : {}),
        },
        servingLine(),
      );
    },
    async reload(next) {
      const fresh = await provisionAll(next.backends);
      const added = await listeners.retarget(next.listeners, fresh);
      for (const previous of backends.values()) {
        if (environments.countOf(previous) === 0) await previous.driver.cleanup();
        else retired.add(previous);
      }
      useBackends(fresh);
      for (const listener of added) await listeners.bind(listener, fresh.get(listener.backend)!);
      if (next.audit?.destination !== current.audit?.destination) {
        const previous = audit;
        audit = next.audit ? await openAuditLog(next.audit.destination) : undefined;
        await previous?.close();
      }
      if (next.metrics?.listen !== current.metrics?.listen) {
        logger.warn("metrics.listen changed: it takes effect at the next start, not on reload");
      }
      logger.level = next.logging.level;
      current = next;
      logger.info({ addresses: this.addresses }, `configuration reloaded; ${servingLine()}`);
    },
    async stop() {
      ready = false;
      clearInterval(reconcileTimer);
      health.setStatus("unhealthy");
      for (const name of backends.keys()) health.setStatus("unhealthy", name);
      calls.draining = true;
      const graceOver = new Promise<"grace-over">((resolve) => {
        const timer = setTimeout(() => resolve("grace-over"), current.shutdownGraceMs);
        endGrace = () => {
          clearTimeout(timer);
          resolve("grace-over");
        };
      });
      if ((await Promise.race([calls.idle(), graceOver])) === "grace-over") {
        logger.warn(
          { graceMs: current.shutdownGraceMs },
          "in-flight calls did not finish in the grace period; cancelling them",
        );
      }
      endGrace();
      // Cancels what still runs (and health watches); cancelled calls stop their commands before we go on.
      listeners.forceShutdown();
      await Promise.race([calls.idle(), delay(cancelUnwindMs)]);
      await listeners.release();
      await reconciling;
      if (current.removeOnShutdown) {
        for (const { id } of environments.live()) {
          await environments
            .remove(id)
            .catch((err: unknown) =>
              logger.error(
                { environmentId: id, err: messageOf(err) },
                "cannot remove an environment at shutdown",
              ),
            );
        }
      }
      for (const { driver } of [...backends.values(), ...retired]) await driver.cleanup();
      await http?.close();
      await audit?.close();
    },
    cancelInFlight() {
      endGrace();
    },
  };
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
