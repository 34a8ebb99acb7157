import type { CallContext } from "nice-grpc-common";
import type { Logger } from "pino";
import type { EnvironmentSpec, ExecResult, ServiceSpec } from "../driver.js";
import type { Backend, EnvironmentService } from "../environments.js";
import { invalidArgument } from "../errors.js";
import { parseGoDuration } from "../go-duration.js";

/** What the server's middlewares learn about a call while an adapter handles it, for metrics, logs and audit. */
export interface RpcInfo {
  environmentId?: string;
  /** The backend of that environment. */
  backend?: string;
}

/** What the server's middlewares add to every call's context for the adapters. */
export interface RpcContextExt {
  rpc: RpcInfo;
  log: Logger;
  /** Records the call's environment (and its backend) for the log, metrics and audit. */
  noteEnvironment: (id: string) => void;
}

export type RpcContext = CallContext & RpcContextExt;

/** What an adapter needs: the core and the backend its listener serves now (a reload may change it). */
export interface AdapterDeps {
  environments: EnvironmentService;
  backend: () => Backend;
}

/** Notes the environment id on the call for logging, and passes it through. */
export function noteEnvironment(context: RpcContext, id: string): string {
  context.noteEnvironment(id);
  return id;
}

export function serviceSpecs(
  services: { name: string; image: string; env: Record<string, string>; ports: string[] }[],
): ServiceSpec[] {
  const seen = new Set<string>();
  return services.map((service) => {
    if (!service.name)
      throw invalidArgument(`a service container has no name; every services entry needs one`);
    if (seen.has(service.name)) throw invalidArgument(`service name "${service.name}" is used twice`);
    seen.add(service.name);
    return { name: service.name, image: service.image, env: { ...service.env }, ports: [...service.ports] };
  });
}

/**
 * The fields of a Create request both generations share, with defaults for
 * the rest. The keys runners add to backend_options of their own accord
 * become what they mean: `label_arg` (the plugin.v1 runner's label
 * argument) is the label argument when the request has none, and
 * `job_timeout` (a Go duration) bounds the environment's life, with the
 * shorter of it and environment_timeout winning.
 */
export function environmentSpec(fields: Partial<EnvironmentSpec>): EnvironmentSpec {
  const { label_arg: labelArg, job_timeout: jobTimeout, ...backendOptions } = fields.backendOptions ?? {};
  let timeoutMs = fields.timeoutMs;
  if (jobTimeout !== undefined) {
    const jobMs = parseGoDuration(jobTimeout);
    if (jobMs === undefined) {
      throw invalidArgument("backend_options job_timeout is not a Go duration such as 2h59m59.9s or 90m");
    }
    if (jobMs !== 0) timeoutMs = timeoutMs === undefined ? jobMs : Math.min(timeoutMs, jobMs);
  }
  return {
    image: "",
    name: "",
    env: {},
    workingDir: "",
    capAdd: [],
    capDrop: [],
    services: [],
    forcePull: false,
    platform: "",
    ...fields,
    labelArg: fields.labelArg || labelArg || "",
    backendOptions,
    timeoutMs,
  };
}

/**
 * environment_timeout in milliseconds: zero (what the runner sends when it
 * has no timeout) is none; a negative one (the job's deadline passed) is
 * kept, for the core to refuse.
 */
export function durationMs(duration: { seconds: number; nanos: number } | undefined): number | undefined {
  if (!duration) return undefined;
  const ms = duration.seconds * 1000 + Math.trunc(duration.nanos / 1_000_000);
  return ms === 0 ? undefined : ms;
}

/** A line appended to stderr to say why a command ended as it did (signal, OOM). */
export function resultNote(result: ExecResult): Buffer | undefined {
  return result.kind === "exited" && result.message ? Buffer.from(`berth: ${result.message}\n`) : undefined;
}
