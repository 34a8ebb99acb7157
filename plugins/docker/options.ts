import { z } from "zod";
import { booleanOption, killGraceOption, listOption } from "../kit/driver-options.js";

export const dockerOptionsSchema = z.object({
  /**
   * The engine: unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host.
   * Unset: the usual DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH rules.
   */
  host: z.string().min(1).optional(),
  /** Directory with ca.pem, cert.pem and key.pem for a tcp:// host (as DOCKER_CERT_PATH). */
  certPath: z.string().min(1).optional(),
  /** Docker config file whose `auths` hold registry credentials; default $DOCKER_CONFIG/config.json or ~/.docker/config.json. */
  dockerConfig: z.string().min(1).optional(),
  /** When images are pulled unless a job says otherwise (backend option pull_policy). */
  pullPolicy: z.enum(["always", "missing", "never"]).default("missing"),
  /** Whether jobs may ask for privileged containers (backend option privileged). */
  allowPrivileged: booleanOption.default(false),
  /** Whether jobs may ask for the host's network (backend option network_mode=host). */
  allowHostNetwork: booleanOption.default(false),
  /** Host paths (and their subdirectories) and named volumes that jobs may mount (backend option volumes). */
  allowedVolumes: listOption.default([]),
  /** How long Start waits for a service container's HEALTHCHECK to pass. */
  serviceHealthTimeoutMs: z.coerce.number().int().min(0).default(60_000),
  /** How long a cancelled command gets between SIGTERM and SIGKILL. */
  killGraceMs: killGraceOption,
  /** Run an init process (the engine's docker-init) as PID 1 of job containers, reaping orphans. */
  init: booleanOption.default(true),
});

export type DockerOptions = z.infer<typeof dockerOptionsSchema>;
