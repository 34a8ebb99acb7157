import type { CallContext } from "nice-grpc-common";
import type { Logger } from "pino";
import type { EnvironmentSpec, ExecResult, ServiceSpec } from "../driver.js";
import type { Backend, EnvironmentService } from "../environments.js";
import { invalidArgument } from "../errors.js";

/** What the server's middleware learns about a call while an adapter handles it, for the log line. */
export interface RpcInfo {
  environmentId?: string;
  /** The backend of that environment. */
  backend?: string;
}

/** What the server's middleware adds to every call's context. */
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

/** Splits v1's `KEY=VALUE` env entries. */
export function parseEnvList(entries: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf("=");
    if (eq <= 0) throw invalidArgument(`env entry "${entry}" is not KEY=VALUE`);
    env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
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

/** The fields of a Create request both generations share, with defaults for the rest. */
export function environmentSpec(fields: Partial<EnvironmentSpec>): EnvironmentSpec {
  return {
    image: "",
    name: "",
    env: {},
    workingDir: "",
    capAdd: [],
    capDrop: [],
    services: [],
    backendOptions: {},
    forcePull: false,
    platform: "",
    labelArg: "",
    ...fields,
  };
}

/** A line appended to stderr to say why a command ended as it did (signal, OOM). */
export function resultNote(result: ExecResult): Buffer | undefined {
  return result.kind === "exited" && result.message ? Buffer.from(`berth: ${result.message}\n`) : undefined;
}
