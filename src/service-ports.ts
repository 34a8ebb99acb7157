import { invalidArgument } from "./errors.js";

/** One entry of a service's `ports`, as `docker run -p` takes them. */
export interface PortSpec {
  hostIp?: string;
  hostPort?: string;
  containerPort: number;
  protocol: "tcp" | "udp" | "sctp";
}

/** Parses "5432", "8080:80", "127.0.0.1:8080:80" and "53/udp"; INVALID_ARGUMENT naming the service otherwise. */
export function parsePortSpec(spec: string, service: string): PortSpec {
  const match = /^(?:(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d+):)?(\d+)(?:\/(tcp|udp|sctp))?$/.exec(spec);
  const containerPort = Number(match?.[3]);
  if (!match || containerPort < 1 || containerPort > 65535) {
    throw invalidArgument(
      `service ${service}: port "${spec}" is not PORT, HOSTPORT:PORT or IP:HOSTPORT:PORT, optionally /udp`,
    );
  }
  const [, hostIp, hostPort, , protocol = "tcp"] = match;
  return {
    ...(hostIp ? { hostIp } : {}),
    ...(hostPort ? { hostPort } : {}),
    containerPort,
    protocol: protocol as PortSpec["protocol"],
  };
}
