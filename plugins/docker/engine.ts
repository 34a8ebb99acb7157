import { readFileSync } from "node:fs";
import { join } from "node:path";
import Docker from "dockerode";
import { invalidArgument } from "../../src/errors.js";
import { engineMessage } from "./errors.js";
import type { DockerOptions } from "./options.js";

/** A dockerode client for the engine the options name, and that engine's address for messages. */
export function connectToEngine(options: DockerOptions): { docker: Docker; where: string } {
  if (!options.host) {
    return { docker: new Docker(), where: process.env.DOCKER_HOST ?? "unix:///var/run/docker.sock" };
  }
  const url = new URL(options.host);
  if (url.protocol === "unix:")
    return { docker: new Docker({ socketPath: url.pathname }), where: options.host };
  if (url.protocol === "ssh:") {
    return {
      docker: new Docker({
        protocol: "ssh",
        host: url.hostname,
        port: Number(url.port || 22),
        username: url.username || undefined,
      }),
      where: options.host,
    };
  }
  if (url.protocol === "tcp:" || url.protocol === "http:" || url.protocol === "https:") {
    const tls = options.certPath !== undefined || url.protocol === "https:";
    return {
      docker: new Docker({
        host: url.hostname,
        port: Number(url.port || (tls ? 2376 : 2375)),
        protocol: tls ? "https" : "http",
        ...(options.certPath
          ? {
              ca: readTlsFile(join(options.certPath, "ca.pem")),
              cert: readTlsFile(join(options.certPath, "cert.pem")),
              key: readTlsFile(join(options.certPath, "key.pem")),
            }
          : {}),
      }),
      where: options.host,
    };
  }
  throw invalidArgument(`driver docker: option "host": ${options.host} is not unix://, tcp:// or ssh://`);
}

function readTlsFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw invalidArgument(`driver docker: cannot read TLS file ${path}: ${engineMessage(err)}`);
  }
}
