import { isIP } from "node:net";
import { resolve } from "node:path";
import { invalidArgument } from "./errors.js";

/** Where `berth serve` listens, and `berth run`/`caps` dial, unless told otherwise. */
export const defaultListen = "unix://./berth.sock";

export type ListenAddress =
  | { kind: "unix"; path: string }
  | { kind: "tcp"; host: string; port: number }
  /** A socket systemd opened and passed in (socket activation), by its FileDescriptorName. */
  | { kind: "systemd"; name?: string };

/**
 * Parses `unix:///abs/path`, `unix://./relative`, `unix:path`,
 * `tcp://host:port` (IPv6 as `tcp://[::1]:port`), or `systemd:NAME` /
 * `systemd:` for a socket passed in by systemd.
 */
export function parseListenAddress(address: string): ListenAddress {
  if (address.startsWith("systemd:")) {
    const name = address.slice("systemd:".length);
    return name ? { kind: "systemd", name } : { kind: "systemd" };
  }
  if (address.startsWith("unix:")) {
    let path = address.slice("unix:".length);
    if (path.startsWith("//")) path = path.slice(2);
    if (!path)
      throw invalidArgument(
        `listen address "${address}" has no socket path; e.g. unix:///run/berth/berth.sock`,
      );
    return { kind: "unix", path: resolve(path) };
  }
  const tcp = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)$/.exec(address);
  if (tcp) {
    const host = tcp[1].replace(/^\[(.*)\]$/, "$1");
    const port = Number(tcp[2]);
    if (port > 65535)
      throw invalidArgument(`listen address "${address}" has port ${port}; ports go up to 65535`);
    return { kind: "tcp", host, port };
  }
  throw invalidArgument(
    `listen address "${address}" is not understood; use unix:///path/to.sock, tcp://host:port or systemd:NAME`,
  );
}

/** The address as grpc-js binds it. */
export function grpcAddress(address: Exclude<ListenAddress, { kind: "systemd" }>): string {
  if (address.kind === "unix") return `unix://${address.path}`;
  return isIP(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

export function formatListenAddress(address: ListenAddress): string {
  if (address.kind === "systemd") return `systemd:${address.name ?? ""}`;
  return address.kind === "unix" ? `unix://${address.path}` : `tcp://${grpcAddress(address)}`;
}

/** Loopback: the only place plain (--insecure) TCP may listen. */
export function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}
