import { readFileSync } from "node:fs";
import { ServerCredentials } from "@grpc/grpc-js";
import { createServer, type Server } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl, HealthState } from "nice-grpc-server-health";
import { ServerReflection, ServerReflectionService } from "nice-grpc-server-reflection";
import type { Logger } from "pino";
import type { Driver } from "./driver.js";
import { findDriverFactory } from "./drivers.js";
import { type Backend, EnvironmentService } from "./environments.js";
import { BerthError, failedPrecondition, messageOf } from "./errors.js";
import { descriptorSet } from "./gen/descriptor-set.js";
import { BackendPluginDefinition as V1Definition } from "./gen/plugin/v1/plugin.js";
import { BackendPluginDefinition as V1alphaDefinition } from "./gen/plugin/v1alpha/plugin.js";
import {
  type ListenAddress,
  formatListenAddress,
  grpcAddress,
  isLoopbackHost,
  parseListenAddress,
} from "./listen-address.js";
import { createV1Service } from "./protocol/v1.js";
import { createV1alphaService } from "./protocol/v1alpha.js";
import { PluginCallTracker, rpcBoundary } from "./rpc-boundary.js";
import { bindWithMode, claimSocketPath, releaseSocketPath } from "./unix-socket.js";

export interface TlsFiles {
  cert: string;
  key: string;
  /** Makes client certificates mandatory and verified against this CA (mutual TLS). */
  clientCa?: string;
}

export interface ListenerConfig {
  address: string;
  tls?: TlsFiles;
  /** Plain TCP without TLS; refused unless the address is loopback. */
  insecure?: boolean;
  /** Unix socket file mode. */
  socketMode?: number;
}

export interface DaemonConfig {
  backend: { name: string; driver: string; options: Record<string, unknown> };
  listeners: ListenerConfig[];
  /** How long in-flight calls may finish after a shutdown begins before they are cancelled. */
  shutdownGraceMs: number;
}

export interface Daemon {
  /** Provisions the driver and binds every listener; throws a BerthError saying what is wrong. */
  start(): Promise<void>;
  /** Stops accepting, lets in-flight calls finish up to the grace period, then cancels them. */
  stop(): Promise<void>;
  /** Ends a running stop()'s grace period now: in-flight calls are cancelled. */
  cancelInFlight(): void;
  /** The addresses bound, as `unix:///…` or `tcp://host:port` (the real port if 0 was asked). */
  readonly addresses: string[];
  readonly environments: EnvironmentService;
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

/** Builds one berth daemon: a driver, the core, and a gRPC server per listener. Nothing runs until start(). */
export function createDaemon({ config, logger }: { config: DaemonConfig; logger: Logger }): Daemon {
  const environments = new EnvironmentService(logger);
  const health = HealthState();
  health.setStatus("unhealthy");
  const servers: { server: Server; release: () => Promise<void> }[] = [];
  const calls = new PluginCallTracker();
  let endGrace: () => void = () => {};
  const addresses: string[] = [];
  let driver: Driver | undefined;

  async function listen(listener: ListenerConfig, backend: Backend): Promise<void> {
    const address = parseListenAddress(listener.address);
    const credentials = listenerCredentials(address, listener);
    const server = createServer(serverOptions).use(
      rpcBoundary(logger.child({ listener: listener.address }), calls),
    );
    server.add(V1Definition, createV1Service({ environments, backend }));
    server.add(V1alphaDefinition, createV1alphaService({ environments, backend }));
    server.add(HealthDefinition, HealthServiceImpl(health));
    server.add(ServerReflectionService, ServerReflection(descriptorSet, pluginServiceNames));
    if (address.kind === "unix") {
      await claimSocketPath(address.path);
      const inode = await bindWithMode(address.path, listener.socketMode ?? 0o660, () =>
        server.listen(grpcAddress(address), credentials),
      );
      servers.push({ server, release: () => releaseSocketPath(address.path, inode) });
      addresses.push(formatListenAddress(address));
    } else {
      const port = await server.listen(grpcAddress(address), credentials);
      servers.push({ server, release: async () => {} });
      addresses.push(formatListenAddress({ ...address, port }));
    }
  }

  return {
    addresses,
    environments,
    async start() {
      const factory = findDriverFactory(config.backend.driver);
      const options = factory.parseOptions(config.backend.options);
      driver = factory.create(options, {
        logger: logger.child({ driver: factory.name, backend: config.backend.name }),
      });
      try {
        await driver.provision();
        const backend = { name: config.backend.name, driver };
        for (const listener of config.listeners) await listen(listener, backend);
      } catch (err) {
        await this.stop();
        throw err instanceof BerthError ? err : failedPrecondition(messageOf(err));
      }
      health.setStatus("healthy");
      logger.info(
        { addresses, backend: config.backend.name, driver: factory.name },
        `berth serving on ${addresses.join(", ")}`,
      );
    },
    async stop() {
      health.setStatus("unhealthy");
      calls.draining = true;
      const graceOver = new Promise<"grace-over">((resolve) => {
        const timer = setTimeout(() => resolve("grace-over"), config.shutdownGraceMs);
        endGrace = () => {
          clearTimeout(timer);
          resolve("grace-over");
        };
      });
      if ((await Promise.race([calls.idle(), graceOver])) === "grace-over") {
        logger.warn(
          { graceMs: config.shutdownGraceMs },
          "in-flight calls did not finish in the grace period; cancelling them",
        );
      }
      endGrace();
      // Cancels what still runs (and health watches); cancelled calls stop their commands before we go on.
      for (const { server } of servers) server.forceShutdown();
      await Promise.race([calls.idle(), delay(cancelUnwindMs)]);
      for (const { release } of servers.splice(0)) await release();
      await driver?.cleanup();
    },
    cancelInFlight() {
      endGrace();
    },
  };
}

/** How long cancelled calls get to unwind (kill their commands) before the driver is cleaned up. */
const cancelUnwindMs = 10_000;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function listenerCredentials(address: ListenAddress, listener: ListenerConfig): ServerCredentials {
  if (address.kind === "unix") return ServerCredentials.createInsecure();
  if (listener.tls) {
    const read = (file: string, what: string) => {
      try {
        return readFileSync(file);
      } catch (err) {
        throw failedPrecondition(`cannot read TLS ${what} ${file}: ${messageOf(err)}`);
      }
    };
    const { cert, key, clientCa } = listener.tls;
    return ServerCredentials.createSsl(
      clientCa ? read(clientCa, "client CA") : null,
      [{ cert_chain: read(cert, "certificate"), private_key: read(key, "key") }],
      clientCa !== undefined,
    );
  }
  if (!listener.insecure) {
    throw failedPrecondition(
      `listener ${listener.address} is TCP without TLS; give --tls-cert and --tls-key (and --tls-client-ca for mutual TLS), or --insecure on a loopback address`,
    );
  }
  if (!isLoopbackHost(address.host)) {
    throw failedPrecondition(
      `refusing plain TCP on ${address.host}: --insecure is only allowed on loopback addresses (127.0.0.1, ::1, localhost); anyone who reaches this address could run commands. Use TLS with --tls-client-ca instead`,
    );
  }
  return ServerCredentials.createInsecure();
}
