import { isAbsolute, posix } from "node:path";
import { invalidArgument, permissionDenied } from "../../src/errors.js";
import { parsePortSpec } from "../kit/service-ports.js";
import type { DockerOptions } from "./options.js";

/** What a job may ask of the docker driver through backend_options. */
export interface JobOptions {
  privileged: boolean;
  memoryBytes?: number;
  nanoCpus?: number;
  /** Unset: the environment's own bridge network. */
  networkMode?: string;
  binds?: string[];
  pullPolicy?: "always" | "missing" | "never";
}

/** The backend_options keys a job may give; the core handles the others before parseJobOptions. */
export const jobOptionKeys = [
  "privileged",
  "memory",
  "cpus",
  "network_mode",
  "volumes",
  "pull_policy",
] as const;

/**
 * Validates a job's backend_options against what the driver's configuration
 * allows: anything that widens privileges (privileged, host network, host
 * paths) is refused unless the administrator allowed it.
 */
export function parseJobOptions(raw: Record<string, string>, allowed: DockerOptions): JobOptions {
  const options: JobOptions = { privileged: false };
  if (raw.privileged !== undefined) {
    options.privileged = parseBoolean(raw.privileged, "privileged");
    if (options.privileged && !allowed.allowPrivileged) {
      throw permissionDenied(
        "backend_options privileged=true is not allowed by this berth's docker configuration (allowPrivileged)",
      );
    }
  }
  if (raw.memory !== undefined) options.memoryBytes = parseBytes(raw.memory);
  if (raw.cpus !== undefined) {
    const cpus = Number(raw.cpus);
    if (!Number.isFinite(cpus) || cpus <= 0)
      throw invalidArgument(`backend_options cpus="${raw.cpus}" is not a positive number, e.g. 1.5`);
    options.nanoCpus = Math.round(cpus * 1e9);
  }
  if (raw.network_mode !== undefined) {
    const mode = raw.network_mode;
    if (mode === "host" && !allowed.allowHostNetwork) {
      throw permissionDenied(
        "backend_options network_mode=host is not allowed by this berth's docker configuration (allowHostNetwork)",
      );
    }
    if (mode !== "host" && mode !== "none" && mode !== "bridge") {
      throw invalidArgument(
        `backend_options network_mode="${mode}" is not one of bridge (the job's own network), none, host`,
      );
    }
    if (mode !== "bridge") options.networkMode = mode;
  }
  if (raw.volumes !== undefined) options.binds = parseVolumes(raw.volumes, allowed.allowedVolumes);
  if (raw.pull_policy !== undefined) {
    const policy = raw.pull_policy;
    if (policy !== "always" && policy !== "missing" && policy !== "never") {
      throw invalidArgument(`backend_options pull_policy="${policy}" is not one of always, missing, never`);
    }
    options.pullPolicy = policy;
  }
  return options;
}

function parseBoolean(value: string, name: string): boolean {
  if (value === "true") return true;
  if (value === "false") return false;
  throw invalidArgument(`backend_options ${name}="${value}" is not true or false`);
}

/** "512m", "2g", "1048576" → bytes. */
function parseBytes(value: string): number {
  const match = /^(\d+(?:\.\d+)?)([kmg]?)b?$/i.exec(value.trim());
  if (!match) throw invalidArgument(`backend_options memory="${value}" is not a size such as 512m or 2g`);
  const factor = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[
    match[2].toLowerCase() as "" | "k" | "m" | "g"
  ];
  return Math.round(Number(match[1]) * factor);
}

/** "src:dst[:ro],…" where src is an allowed host path (or below one) or an allowed named volume. */
function parseVolumes(value: string, allowedVolumes: string[]): string[] {
  return value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((volume) => {
      const [source, target, mode, ...rest] = volume.split(":");
      if (
        !source ||
        !target ||
        rest.length > 0 ||
        (mode !== undefined && mode !== "ro" && mode !== "rw") ||
        !posix.isAbsolute(target)
      ) {
        throw invalidArgument(
          `backend_options volumes entry "${volume}" is not SOURCE:/container/path[:ro|rw]`,
        );
      }
      const permitted = isAbsolute(source)
        ? allowedVolumes.some(
            (root) => isAbsolute(root) && isBelow(posix.normalize(source), posix.normalize(root)),
          )
        : allowedVolumes.includes(source);
      if (!permitted) {
        throw permissionDenied(
          `backend_options volumes: ${source} is not in this berth's docker allowedVolumes (${allowedVolumes.join(", ") || "none"})`,
        );
      }
      return volume;
    });
}

function isBelow(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

/** Service ports as docker run -p takes them: "5432", "8080:80", "127.0.0.1:8080:80", "53/udp". */
export function portBindings(
  ports: string[],
  service: string,
): { exposed: Record<string, object>; bindings: Record<string, { HostIp?: string; HostPort: string }[]> } {
  const exposed: Record<string, object> = {};
  const bindings: Record<string, { HostIp?: string; HostPort: string }[]> = {};
  for (const { hostIp, hostPort, containerPort, protocol } of ports.flatMap((p) =>
    parsePortSpec(p, service),
  )) {
    const key = `${containerPort}/${protocol}`;
    exposed[key] = {};
    (bindings[key] ??= []).push({ ...(hostIp ? { HostIp: hostIp } : {}), HostPort: hostPort ?? "" });
  }
  return { exposed, bindings };
}
