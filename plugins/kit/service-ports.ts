import { isIP } from "node:net";
import { invalidArgument } from "../../src/errors.js";

/** One port of a service, as `docker run -p` takes them. */
export interface PortSpec {
  hostIp?: string;
  hostPort?: string;
  containerPort: number;
  protocol: "tcp" | "udp" | "sctp";
}

/** More ports than this in one range is a mistake, not a service. */
const maxRange = 1000;

const specPattern =
  /^(?:(?:(\[[0-9a-fA-F:.]+\]|\d{1,3}(?:\.\d{1,3}){3}):)?(\d+(?:-\d+)?)?:)?(\d+(?:-\d+)?)(?:\/(tcp|udp|sctp))?$/;

/** "80" → [80, 80], "8000-8010" → [8000, 8010]; undefined if not ports. `lowest` 0 allows "any port" (0). */
function portRange(text: string, lowest = 1): [number, number] | undefined {
  const [first, last = first] = text.split("-").map(Number);
  const valid = (port: number) => Number.isInteger(port) && port >= lowest && port <= 65535;
  return valid(first) && valid(last) && first <= last && (first > 0 || first === last)
    ? [first, last]
    : undefined;
}

/**
 * The ports of one entry of a service's `ports`, as runners pass them on
 * from workflows: "5432", "8080:80", "127.0.0.1:8080:80", "[::1]:8080:80",
 * "127.0.0.1::80" and "127.0.0.1:0:80" (any host port), ranges "8000-8010:8000-8010", each
 * optionally "/udp" or "/sctp". INVALID_ARGUMENT naming the service and
 * the entry otherwise.
 */
export function parsePortSpec(spec: string, service: string): PortSpec[] {
  const bad = (why: string) =>
    invalidArgument(
      `service ${service}: port "${spec}" ${why}; give PORT, HOSTPORT:PORT, IP:HOSTPORT:PORT or [IPv6]:HOSTPORT:PORT, ranges as 8000-8010:8000-8010, optionally /udp or /sctp`,
    );
  const match = specPattern.exec(spec);
  if (!match) throw bad("is not a port specification");
  const [, ip, hostText, containerText, protocol = "tcp"] = match;
  const hostIp = ip?.replace(/^\[(.*)\]$/, "$1");
  if (hostIp !== undefined && isIP(hostIp) === 0) throw bad("has a host address that is not an IP address");
  const container = portRange(containerText);
  // A host port of 0 is any free one, as with docker run -p.
  const host = hostText === undefined ? undefined : portRange(hostText, 0);
  if (!container || (hostText !== undefined && !host))
    throw bad("has a port outside 1-65535 or a reversed range");
  const count = container[1] - container[0] + 1;
  if (host && host[1] - host[0] + 1 !== count) throw bad("maps ranges of different lengths");
  if (count > maxRange) throw bad(`has a range of more than ${maxRange} ports`);
  return Array.from({ length: count }, (_, i) => ({
    ...(hostIp ? { hostIp } : {}),
    ...(host ? { hostPort: String(host[0] + i) } : {}),
    containerPort: container[0] + i,
    protocol: protocol as PortSpec["protocol"],
  }));
}
