/**
 * systemd socket activation: sockets a `.socket` unit opened and passed in
 * as file descriptors 3, 4, … (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES).
 * grpc-js can only bind addresses itself, so each passed socket is served by
 * relaying its connections to a grpc-js listener on a private unix socket.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, type Server, type Socket, connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { failedPrecondition } from "./errors.js";

const firstFd = 3;

/** The passed-in sockets by name, read once; the variables are removed so job processes do not inherit them. */
let passed: Map<string, number> | undefined;

function passedSockets(): Map<string, number> {
  if (passed) return passed;
  passed = new Map();
  const { LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, BERTH_LISTEN_FDS_FROM_PARENT } = process.env;
  // bin/berth.js re-runs berth on a newer Node and hands the sockets down: then they were meant for the parent.
  const forUs =
    LISTEN_PID === String(process.pid) ||
    (BERTH_LISTEN_FDS_FROM_PARENT === "1" && LISTEN_PID === String(process.ppid));
  const count = Number(LISTEN_FDS ?? 0);
  if (forUs && count > 0) {
    const names = (LISTEN_FDNAMES ?? "").split(":");
    for (let i = 0; i < count; i++) passed.set(names[i] || `fd${firstFd + i}`, firstFd + i);
  }
  for (const name of ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "BERTH_LISTEN_FDS_FROM_PARENT"]) {
    delete process.env[name];
  }
  return passed;
}

/** A relay from a passed-in socket to a private unix socket that grpc-js binds. */
export interface ActivatedListener {
  /** `unix:///…` for grpc-js to bind. */
  innerAddress: string;
  /** The passed socket's own address: host and port for TCP; a path or null for a unix socket. */
  local: string | AddressInfo | null;
  /** Start relaying (after grpc-js has bound innerAddress). */
  start(): void;
  close(): Promise<void>;
}

/** Takes the passed-in socket named `name` (or the only one), ready to relay. */
export async function activatedListener(name: string | undefined): Promise<ActivatedListener> {
  const sockets = passedSockets();
  const fd =
    name === undefined ? (sockets.size === 1 ? [...sockets.values()][0] : undefined) : sockets.get(name);
  if (fd === undefined) {
    const have = [...sockets.keys()].join(", ") || "none (LISTEN_FDS is not set for berth)";
    throw failedPrecondition(
      name === undefined
        ? `listener systemd: needs exactly one socket from systemd, and there are: ${have}; name one (systemd:NAME, NAME as in FileDescriptorName=)`
        : `listener systemd:${name}: systemd passed no socket named ${name} (passed: ${have})`,
    );
  }
  sockets.delete(name ?? [...sockets.keys()][0]);
  const open = new Set<Socket>();
  // Connections can wait in the socket before grpc-js has bound: hold them (paused) until start().
  let relaying = false;
  const waiting: Socket[] = [];
  const relay = (client: Socket) => {
    const upstream = connect(innerPath);
    open.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream).pipe(client);
    client.resume();
  };
  const dir = await mkdtemp(join(tmpdir(), "berth-activated-"));
  const innerPath = join(dir, "grpc.sock");
  // Listen only now: connections already queued on the socket are accepted at once.
  const outer: Server = createServer({ pauseOnConnect: true }, (client: Socket) => {
    if (relaying) relay(client);
    else waiting.push(client);
  });
  await new Promise<void>((resolve, reject) => {
    outer.once("error", (err) => {
      void rm(dir, { recursive: true, force: true });
      reject(failedPrecondition(`cannot use the socket systemd passed as fd ${fd}: ${err.message}`));
    });
    outer.listen({ fd }, resolve);
  });
  return {
    innerAddress: `unix://${innerPath}`,
    local: outer.address(),
    start() {
      relaying = true;
      for (const client of waiting.splice(0)) relay(client);
    },
    async close() {
      const closed = new Promise((resolve) => outer.close(resolve));
      for (const socket of [...open, ...waiting.splice(0)]) socket.destroy();
      await closed;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
