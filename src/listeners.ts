import { readFileSync } from "node:fs";
import { chown } from "node:fs/promises";
import { ServerCredentials, experimental } from "@grpc/grpc-js";
import type { Server } from "nice-grpc";
import type { Logger } from "pino";
import { type ListenerConfig, tcpListenerProblem } from "./config.js";
import type { Backend } from "./environments.js";
import { failedPrecondition, messageOf } from "./errors.js";
import {
  type ListenAddress,
  formatListenAddress,
  grpcAddress,
  parseListenAddress,
} from "./listen-address.js";
import { type ActivatedListener, activatedListener } from "./systemd.js";
import { TlsFileProvider } from "./tls-files.js";
import { bindWithMode, claimSocketPath, releaseSocketPath } from "./unix-socket.js";

/** What a reload may change on a bound listener; the binding itself stays as it was made. */
export interface ListenerTarget {
  config: ListenerConfig;
  backend: Backend;
}

/**
 * Builds a listener's gRPC server. The target is live: a reload changes it
 * under the server, so read it per call, not once.
 */
export type ServerFactory = (target: Readonly<ListenerTarget>, transport: "unix" | "tcp") => Server;

interface BoundListener {
  target: ListenerTarget;
  server: Server;
  /** `unix:///…` or `tcp://host:port`, with the real port if 0 was asked. */
  address: string;
  /** Gives back what the binding holds: the socket file, or systemd's socket and its relay. */
  release: () => Promise<void>;
}

/**
 * The listeners a daemon serves on: bound at start, pointed at new backends
 * (or closed, or added) on reload, released at stop.
 */
export class Listeners {
  private readonly bound: BoundListener[] = [];
  /** Listeners a reload removed, still finishing their calls. */
  private readonly closing = new Set<Promise<void>>();

  constructor(
    private readonly logger: Logger,
    private readonly serverFor: ServerFactory,
  ) {}

  get addresses(): string[] {
    return this.bound.map((listener) => listener.address);
  }

  /** Each address with the backend it serves, for the log line saying where berth serves. */
  describe(): string {
    return this.bound.map(({ address, target }) => `${address} (backend ${target.backend.name})`).join(", ");
  }

  async bind(config: ListenerConfig, backend: Backend): Promise<void> {
    const endpoint = await endpointOf(parseListenAddress(config.address));
    const transport = transportOf(endpoint);
    let credentials;
    try {
      credentials = listenerCredentials(transport, config, this.logger.child({ listener: config.address }));
    } catch (err) {
      if (endpoint.kind === "systemd") await endpoint.activated.close();
      throw err;
    }
    const target = { config, backend };
    const server = this.serverFor(target, transport.kind);
    const binding = await bindServer(server, endpoint, credentials, config);
    this.bound.push({ target, server, ...binding });
  }

  /**
   * Points the listeners the next configuration keeps at its backends and
   * closes the ones it drops; returns the ones it adds, still to be bound.
   */
  async retarget(
    next: readonly ListenerConfig[],
    backends: ReadonlyMap<string, Backend>,
  ): Promise<ListenerConfig[]> {
    const wanted = new Map(next.map((listener) => [listener.address, listener]));
    for (const bound of [...this.bound]) {
      const { target } = bound;
      const listener = wanted.get(target.config.address);
      if (!listener) {
        await this.close(bound);
        continue;
      }
      if (!sameBinding(listener, target.config)) {
        this.logger.warn(
          { listener: listener.address },
          "this listener's TLS files, insecure flag or socket settings changed: they take effect at the next start, not on reload",
        );
      }
      // The binding stays; what the calls see (backend, allowed clients) is the new configuration's.
      target.config = {
        ...target.config,
        backend: listener.backend,
        ...(target.config.tls
          ? { tls: { ...target.config.tls, allowedClients: listener.tls?.allowedClients } }
          : {}),
      };
      target.backend = backends.get(listener.backend)!;
      wanted.delete(listener.address);
    }
    return [...wanted.values()];
  }

  /** Cancels every call still running, health watches too. */
  forceShutdown(): void {
    for (const { server } of this.bound) server.forceShutdown();
  }

  /** Releases every binding, then waits for the listeners a reload removed to finish their calls. */
  async release(): Promise<void> {
    for (const { release } of this.bound.splice(0)) await release();
    await Promise.all(this.closing);
  }

  /** Takes no new calls on the listener; the ones in flight finish. */
  private async close(bound: BoundListener): Promise<void> {
    this.bound.splice(this.bound.indexOf(bound), 1);
    await bound.release();
    const finishing = bound.server.shutdown().finally(() => this.closing.delete(finishing));
    this.closing.add(finishing);
  }
}

/** A listen address ready to bind: a `systemd:` one with the socket systemd passed in. */
type Endpoint =
  | Exclude<ListenAddress, { kind: "systemd" }>
  | (Extract<ListenAddress, { kind: "systemd" }> & { activated: ActivatedListener });

async function endpointOf(address: ListenAddress): Promise<Endpoint> {
  return address.kind === "systemd"
    ? { ...address, activated: await activatedListener(address.name) }
    : address;
}

/** How calls arrive: over a unix socket, or TCP on a host (which the loopback check looks at). */
type Transport = { kind: "unix" } | { kind: "tcp"; host: string };

function transportOf(endpoint: Endpoint): Transport {
  if (endpoint.kind === "unix") return { kind: "unix" };
  if (endpoint.kind === "tcp") return { kind: "tcp", host: endpoint.host };
  // A socket from systemd is served through a relay; it is TCP or unix, whatever systemd opened.
  const { local } = endpoint.activated;
  return typeof local === "object" && local !== null
    ? { kind: "tcp", host: local.address }
    : { kind: "unix" };
}

/** TLS (reloading its files) where the listener has it; plain TCP only where allowed; nothing on unix sockets. */
function listenerCredentials(
  transport: Transport,
  listener: ListenerConfig,
  logger: Logger,
): ServerCredentials {
  if (transport.kind === "unix") return ServerCredentials.createInsecure();
  if (listener.tls) {
    const { cert, key, clientCa, reloadSeconds } = listener.tls;
    // Read and checked now, so startup fails on unusable files rather than the first handshake;
    // read again every interval, so a rotated certificate takes effect without a restart.
    const files = new TlsFileProvider({ cert, key, clientCa }, reloadSeconds * 1000, logger);
    return experimental.createCertificateProviderServerCredentials(
      files,
      clientCa === undefined ? null : files,
      clientCa !== undefined,
    );
  }
  const problem = tcpListenerProblem(listener.address, transport.host, undefined, listener.insecure ?? false);
  if (problem) throw failedPrecondition(problem);
  return ServerCredentials.createInsecure();
}

/** Binds the server to the endpoint; returns the address bound and how to give it back. */
async function bindServer(
  server: Server,
  endpoint: Endpoint,
  credentials: ServerCredentials,
  listener: ListenerConfig,
): Promise<Pick<BoundListener, "address" | "release">> {
  switch (endpoint.kind) {
    case "unix": {
      await claimSocketPath(endpoint.path);
      const inode = await bindWithMode(endpoint.path, listener.socketMode ?? 0o660, () =>
        server.listen(grpcAddress(endpoint), credentials),
      );
      if (listener.socketOwner !== undefined || listener.socketGroup !== undefined) {
        await chownSocket(endpoint.path, listener);
      }
      return {
        address: formatListenAddress(endpoint),
        release: () => releaseSocketPath(endpoint.path, inode),
      };
    }
    case "systemd": {
      const { activated } = endpoint;
      try {
        await server.listen(activated.innerAddress, credentials);
      } catch (err) {
        await activated.close();
        throw err;
      }
      activated.start();
      return { address: formatListenAddress(endpoint), release: () => activated.close() };
    }
    case "tcp": {
      const port = await server.listen(grpcAddress(endpoint), credentials);
      return { address: formatListenAddress({ ...endpoint, port }), release: async () => {} };
    }
  }
}

/** Whether a listener would be bound the same way: what a reload cannot change without rebinding. */
function sameBinding(a: ListenerConfig, b: ListenerConfig): boolean {
  const binding = (l: ListenerConfig) =>
    JSON.stringify([
      l.address,
      l.insecure ?? false,
      l.socketMode,
      l.socketOwner,
      l.socketGroup,
      l.tls?.cert,
      l.tls?.key,
      l.tls?.clientCa,
      l.tls?.reloadSeconds,
    ]);
  return binding(a) === binding(b);
}

/** Gives the socket file the configured owner and group (names or numbers). */
async function chownSocket(path: string, listener: ListenerConfig): Promise<void> {
  const uid = listener.socketOwner === undefined ? -1 : resolveId(listener.socketOwner, "passwd");
  const gid = listener.socketGroup === undefined ? -1 : resolveId(listener.socketGroup, "group");
  try {
    await chown(path, uid, gid);
  } catch (err) {
    throw failedPrecondition(
      `cannot give socket ${path} owner ${listener.socketOwner ?? "(unchanged)"} and group ${listener.socketGroup ?? "(unchanged)"}: ${messageOf(err)}`,
    );
  }
}

/** A user or group id from a number or a name in /etc/passwd or /etc/group. */
function resolveId(value: string | number, database: "passwd" | "group"): number {
  if (typeof value === "number" || /^\d+$/.test(value)) return Number(value);
  const entries = readFileSync(`/etc/${database}`, "utf8").split("\n");
  const entry = entries.find((line) => line.split(":")[0] === value);
  if (!entry)
    throw failedPrecondition(
      `no ${database === "passwd" ? "user" : "group"} named ${value} in /etc/${database}`,
    );
  return Number(entry.split(":")[2]);
}
