import type { ServiceImplementation } from "nice-grpc";
import type { DriverCapabilities, EnvironmentSpec } from "../driver.js";
import type { CopyInPart, ExecEvent } from "../environments.js";
import { failedPrecondition } from "../errors.js";
import {
  type BackendPluginDefinition,
  type CapabilitiesResponse,
  type CopyInChunk,
  type CreateRequest,
  type ExecOutput,
  ExecOutput_Stream,
} from "../gen/plugin/v1/plugin.js";
import {
  type AdapterDeps,
  type RpcContextExt,
  environmentSpec,
  noteEnvironment,
  serviceSpecs,
} from "./common.js";
import { parseV1CreateEnv } from "./v1-env.js";

/** plugin.v1 protocol version berth speaks (CapabilitiesResponse.protocol_version). */
const protocolVersion = 1;

/** exit_code of a v1 `done` message for a command that could not be run at all. */
const couldNotRunExitCode = 127;

/** plugin.v1.BackendPlugin as a thin adapter over the core. */
export function createV1Service({
  environments,
  backend,
}: AdapterDeps): ServiceImplementation<typeof BackendPluginDefinition, RpcContextExt> {
  return {
    async capabilities() {
      const current = backend();
      return v1Capabilities(current.name, environments.capabilities(current));
    },

    async create(request, context) {
      const spec = v1EnvironmentSpec(request);
      const { id } = await environments.create(backend(), spec, context.signal);
      return { environmentId: noteEnvironment(context, id), delegate: undefined };
    },

    async start(request, context) {
      const id = noteEnvironment(context, request.environmentId);
      // v1's Start is unary: progress has nowhere to go but berth's debug log.
      for await (const event of environments.start(id, context.signal)) {
        if (event.type === "started") return { imageEnv: event.imageEnv };
        context.log.debug({ line: event.line }, "start progress");
      }
      throw new Error("start ended without a result");
    },

    async *exec(request, context): AsyncGenerator<ExecOutput> {
      const id = noteEnvironment(context, request.environmentId);
      const spec = {
        command: request.command,
        env: request.env,
        user: request.user,
        workdir: request.workdir,
      };
      for await (const event of environments.exec(id, spec, context.signal)) yield v1ExecOutput(event);
    },

    async copyIn(requests, context) {
      await environments.copyIn(copyInParts(requests), context.signal, (id) => noteEnvironment(context, id));
      return {};
    },

    async copyLocal(request, context) {
      const id = noteEnvironment(context, request.environmentId);
      await environments.copyLocal(id, request.srcPath, request.destPath, context.signal);
      return {};
    },

    async *copyOut(request, context) {
      const id = noteEnvironment(context, request.environmentId);
      for await (const data of environments.copyOut(id, request.srcPath, context.signal)) yield { data };
    },

    async updateEnv(request, context) {
      const id = noteEnvironment(context, request.environmentId);
      const updatedEnv = await environments.updateEnv(
        id,
        request.srcPath,
        request.currentEnv,
        context.signal,
      );
      return { updatedEnv };
    },

    async isHealthy(request, context) {
      const id = noteEnvironment(context, request.environmentId);
      const { waitMs } = await environments.health(id, context.signal);
      return { wait: waitMs > 0 ? protoDuration(waitMs) : undefined };
    },

    async remove(request, context) {
      await environments.remove(noteEnvironment(context, request.environmentId));
      return {};
    },
  };
}

/** CapabilitiesResponse of a backend; FAILED_PRECONDITION if its driver has no layout for every environment. */
function v1Capabilities(backendName: string, caps: DriverCapabilities): CapabilitiesResponse {
  const layout = caps.globalLayout;
  if (!layout) {
    throw failedPrecondition(
      `backend ${backendName} cannot serve plugin.v1: ${caps.globalLayoutUnavailableReason ?? "it has no global layout"}`,
    );
  }
  return {
    name: backendName,
    rootPath: layout.rootPath,
    actPath: layout.actPath,
    toolCachePath: layout.toolCachePath,
    pathVariableName: layout.pathVariableName,
    defaultPathVariable: layout.defaultPathVariable,
    pathSeparator: layout.pathSeparator,
    supportsDockerActions: caps.supportsDockerActions,
    managesOwnNetworking: caps.managesOwnNetworking,
    supportsServiceContainers: caps.supportsServiceContainers,
    environmentCaseInsensitive: layout.environmentCaseInsensitive,
    runnerContext: {
      os: layout.os,
      arch: layout.arch,
      temp: layout.tempPath,
      tool_cache: layout.toolCachePath,
    },
    supportsLocalCopy: caps.supportsLocalCopy,
    delegatesToDocker: false,
    protocolVersion,
  };
}

function v1EnvironmentSpec(request: CreateRequest): EnvironmentSpec {
  return environmentSpec({
    image: request.image,
    name: request.name,
    env: parseV1CreateEnv(request.env),
    workingDir: request.workingDir,
    capAdd: request.capAdd,
    capDrop: request.capDrop,
    services: serviceSpecs(request.services),
    backendOptions: request.backendOptions,
    forcePull: request.forcePull,
    platform: request.platform,
  });
}

/** An Exec event as a v1 message: output, or a `done` message with how the command ended. */
function v1ExecOutput(event: ExecEvent): ExecOutput {
  if (event.type === "output") {
    const stream = event.stream === "stdout" ? ExecOutput_Stream.STDOUT : ExecOutput_Stream.STDERR;
    return { stream, data: event.data, exitCode: 0, done: false, errorMessage: "" };
  }
  if (event.result.kind === "exited") {
    const { exitCode, message = "" } = event.result;
    return {
      stream: ExecOutput_Stream.STDOUT,
      data: Buffer.alloc(0),
      exitCode,
      done: true,
      errorMessage: message,
    };
  }
  return {
    stream: ExecOutput_Stream.STDERR,
    data: Buffer.alloc(0),
    exitCode: couldNotRunExitCode,
    done: true,
    errorMessage: event.result.message,
  };
}

async function* copyInParts(chunks: AsyncIterable<CopyInChunk>): AsyncGenerator<CopyInPart> {
  for await (const chunk of chunks) {
    // v1's fields are plain strings: empty means unset.
    yield {
      environmentId: chunk.environmentId || undefined,
      destPath: chunk.destPath || undefined,
      data: chunk.data,
    };
  }
}

function protoDuration(ms: number): { seconds: number; nanos: number } {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}
