import type { ServiceImplementation } from "nice-grpc";
import {
  type BackendPluginDefinition,
  DataChunk_Stream,
  type ExecOutput,
  type StartOutput,
} from "../gen/plugin/v1alpha/plugin.js";
import { BerthError } from "../errors.js";
import {
  type AdapterDeps,
  type RpcContextExt,
  durationMs,
  environmentSpec,
  noteEnvironment,
  resultNote,
  serviceSpecs,
} from "./common.js";

/** plugin.v1alpha.BackendPlugin (Forgejo Runner 13.1+) as a thin adapter over the core. */
export function createV1alphaService({
  environments,
  backend,
}: AdapterDeps): ServiceImplementation<typeof BackendPluginDefinition, RpcContextExt> {
  return {
    async capabilities() {
      return { name: backend().name };
    },

    async create(request, context) {
      const spec = environmentSpec({
        image: request.image,
        name: request.name,
        capAdd: request.capAdd,
        capDrop: request.capDrop,
        services: serviceSpecs(request.services),
        backendOptions: request.backendOptions,
        labelArg: request.labelArg,
        timeoutMs: durationMs(request.environmentTimeout),
      });
      const { id, layout } = await environments.create(backend(), spec, context.signal);
      return {
        environmentId: noteEnvironment(context, id),
        rootPath: layout.rootPath,
        actPath: layout.actPath,
        toolCachePath: layout.toolCachePath,
        tempPath: layout.tempPath,
        pathVariableName: layout.pathVariableName,
        defaultPathVariable: layout.defaultPathVariable,
        pathSeparator: layout.pathSeparator,
        environmentCaseInsensitive: layout.environmentCaseInsensitive,
        os: layout.os,
        arch: layout.arch,
      };
    },

    async *start(request, context): AsyncGenerator<StartOutput> {
      const id = noteEnvironment(context, request.environmentId);
      for await (const event of environments.start(id, context.signal)) {
        if (event.type === "progress") {
          const data = Buffer.from(`${event.line}\n`);
          yield { output: { $case: "data", value: { stream: DataChunk_Stream.STDOUT, data } } };
        } else {
          yield { output: { $case: "startComplete", value: { imageEnv: event.imageEnv } } };
        }
      }
    },

    async *exec(request, context): AsyncGenerator<ExecOutput> {
      const id = noteEnvironment(context, request.environmentId);
      const spec = {
        command: request.command,
        env: request.env,
        user: request.user ?? "",
        workdir: request.workdir,
      };
      for await (const event of environments.exec(id, spec, context.signal)) {
        if (event.type === "output") {
          const stream = event.stream === "stdout" ? DataChunk_Stream.STDOUT : DataChunk_Stream.STDERR;
          yield { output: { $case: "data", value: { stream, data: event.data } } };
        } else if (event.result.kind === "exited") {
          const note = resultNote(event.result);
          if (note)
            yield { output: { $case: "data", value: { stream: DataChunk_Stream.STDERR, data: note } } };
          yield { output: { $case: "execComplete", value: { exitCode: event.result.exitCode } } };
        } else {
          yield { output: { $case: "execFailed", value: { errorMessage: event.result.message } } };
        }
      }
    },

    async copyIn(requests, context) {
      await environments.copyIn(requests, context.signal, (id) => noteEnvironment(context, id));
      return {};
    },

    async *copyOut(request, context) {
      const id = noteEnvironment(context, request.environmentId);
      try {
        for await (const data of environments.copyOut(id, request.srcPath, context.signal)) yield { data };
      } catch (err) {
        // The released runner reads its env files through CopyOut and fails the step on any
        // stream error, where its own Docker backend ignores a missing file: a path that does
        // not exist is an empty stream here (no tar at all; an empty directory is a tar entry).
        if (!(err instanceof BerthError && err.missingPath)) throw err;
        context.log.debug({ environmentId: id }, "CopyOut of a path that does not exist: empty stream");
      }
    },

    async remove(request, context) {
      await environments.remove(noteEnvironment(context, request.environmentId));
      return {};
    },
  };
}
