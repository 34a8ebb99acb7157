import type { ServiceImplementation } from "nice-grpc";
import {
  type BackendPluginDefinition,
  type CapabilitiesResponse,
  type ExecOutput,
  ExecOutput_Stream,
} from "../gen/plugin/v1/plugin.js";
import { failedPrecondition } from "../errors.js";
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
      const caps = environments.capabilities(backend());
      const layout = caps.globalLayout;
      if (!layout) {
        throw failedPrecondition(
          `backend ${backend().name} cannot serve plugin.v1: ${caps.globalLayoutUnavailableReason ?? "it has no global layout"}`,
        );
      }
      return {
        name: backend().name,
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
      } satisfies CapabilitiesResponse;
    },

    async create(request, context) {
      const spec = environmentSpec({
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
      for await (const event of environments.exec(id, spec, context.signal)) {
        if (event.type === "output") {
          const stream = event.stream === "stdout" ? ExecOutput_Stream.STDOUT : ExecOutput_Stream.STDERR;
          yield { stream, data: event.data, exitCode: 0, done: false, errorMessage: "" };
        } else if (event.result.kind === "exited") {
          const { exitCode, message = "" } = event.result;
          yield {
            stream: ExecOutput_Stream.STDOUT,
            data: Buffer.alloc(0),
            exitCode,
            done: true,
            errorMessage: message,
          };
        } else {
          const errorMessage = event.result.message;
          yield {
            stream: ExecOutput_Stream.STDERR,
            data: Buffer.alloc(0),
            exitCode: couldNotRunExitCode,
            done: true,
            errorMessage,
          };
        }
      }
    },

    async copyIn(requests, context) {
      async function* parts() {
        for await (const chunk of requests) {
          // v1's fields are plain strings: empty means unset.
          yield {
            environmentId: chunk.environmentId || undefined,
            destPath: chunk.destPath || undefined,
            data: chunk.data,
          };
        }
      }
      await environments.copyIn(parts(), context.signal, (id) => noteEnvironment(context, id));
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
      return {
        wait:
          waitMs > 0 ? { seconds: Math.floor(waitMs / 1000), nanos: (waitMs % 1000) * 1_000_000 } : undefined,
      };
    },

    async remove(request, context) {
      await environments.remove(noteEnvironment(context, request.environmentId));
      return {};
    },
  };
}
