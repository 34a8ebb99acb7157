/**
 * The HTTP listener for what does not speak gRPC: Prometheus scrapes
 * `/metrics`, and probes ask `/healthz` (the process answers) and `/readyz`
 * (every backend is provisioned and berth takes calls; 503 while starting or
 * shutting down).
 */
import { type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { failedPrecondition, invalidArgument, messageOf } from "./errors.js";
import type { Metrics } from "./metrics.js";

export interface HttpEndpoints {
  /** `host:port` as bound (the real port if 0 was asked). */
  address: string;
  close(): Promise<void>;
}

/** Parses `host:port`, `[v6]:port` or `:port` (all interfaces). */
function parseHostPort(listen: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(listen);
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    throw invalidArgument(`metrics listen address "${listen}" is not host:port, e.g. 127.0.0.1:9464`);
  }
  return { host: match[1] ?? (match[2] || "0.0.0.0"), port };
}

export async function serveHttpEndpoints(
  listen: string,
  { metrics, ready }: { metrics: Metrics; ready: () => boolean },
): Promise<HttpEndpoints> {
  const { host, port } = parseHostPort(listen);
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    const reply = (status: number, body: string, type = "text/plain; charset=utf-8") => {
      response.writeHead(status, { "content-type": type }).end(body);
    };
    if (request.method !== "GET" && request.method !== "HEAD") return reply(405, "only GET\n");
    if (path === "/metrics") {
      metrics.text().then(
        (text) => reply(200, text, metrics.registry.contentType),
        (err: unknown) => reply(500, `cannot collect metrics: ${messageOf(err)}\n`),
      );
    } else if (path === "/healthz") reply(200, "ok\n");
    else if (path === "/readyz") reply(ready() ? 200 : 503, ready() ? "ready\n" : "not ready\n");
    else reply(404, "berth serves /metrics, /healthz and /readyz here\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) =>
      reject(failedPrecondition(`cannot listen for metrics on ${listen}: ${messageOf(err)}`)),
    );
    server.listen(port, host, resolve);
  });
  const bound = server.address() as AddressInfo;
  return {
    address: `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
