import { readFileSync } from "node:fs";
import { ChannelCredentials } from "@grpc/grpc-js";
import { type Channel, createChannel, createClient } from "nice-grpc";
import {
  BackendPluginDefinition as V1Definition,
  type BackendPluginClient as V1Client,
  ExecOutput_Stream,
} from "./gen/plugin/v1/plugin.js";
import {
  BackendPluginDefinition as V1alphaDefinition,
  type BackendPluginClient as V1alphaClient,
  DataChunk_Stream,
} from "./gen/plugin/v1alpha/plugin.js";
import { invalidArgument } from "./errors.js";
import { grpcAddress, parseListenAddress } from "./listen-address.js";

export interface ClientTls {
  /** CA that signed the server's certificate. */
  ca?: string;
  /** Client certificate and key, for mutual TLS. */
  cert?: string;
  key?: string;
}

export type Generation = "v1" | "v1alpha";

/** Opens a channel the way the runners do: 32 MiB messages, keepalive pings every 30 s. */
export function openChannel(target: string, tls?: ClientTls): Channel {
  const address = parseListenAddress(target);
  if (address.kind === "systemd")
    throw invalidArgument(`${target}: a client dials unix:// or tcp:// addresses`);
  const read = (file?: string) => (file ? readFileSync(file) : null);
  const credentials =
    address.kind === "tcp" && tls?.ca
      ? ChannelCredentials.createSsl(read(tls.ca), read(tls.key), read(tls.cert))
      : ChannelCredentials.createInsecure();
  return createChannel(grpcAddress(address), credentials, {
    "grpc.max_receive_message_length": 32 * 1024 * 1024,
    "grpc.max_send_message_length": 32 * 1024 * 1024,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_permit_without_calls": 1,
    // HTTP/2's default 64 KiB window stalls streamed output on round trips; runners (grpc-go) size theirs dynamically.
    "grpc-node.flow_control_window": 16 * 1024 * 1024,
  });
}

export interface CreateOptions {
  image?: string;
  backendOptions?: Record<string, string>;
  services?: { name: string; image: string; env?: Record<string, string>; ports?: string[] }[];
  /** v1 only: KEY=VALUE for every command. */
  env?: string[];
  /** v1alpha only. */
  labelArg?: string;
  timeoutMs?: number;
}

export interface CreatedLayout {
  rootPath: string;
  actPath: string;
  toolCachePath: string;
  tempPath: string;
  os?: string;
  arch?: string;
}

export interface ExecOptions {
  env?: Record<string, string>;
  workdir?: string;
  user?: string;
  signal?: AbortSignal;
  onOutput?: (stream: "stdout" | "stderr", data: Buffer) => void;
}

/**
 * How a command ended, as a runner sees it: `exitCode` when it ran, and
 * `failed` (v1alpha ExecFailed) or `errorMessage` (v1 done.error_message).
 */
export interface ExecOutcome {
  exitCode?: number;
  errorMessage?: string;
  failed?: string;
}

/**
 * A runner's side of either protocol generation behind one interface: used
 * by the CLI and by the conformance tests, which run the same checks over both.
 */
export interface PluginClient {
  readonly generation: Generation;
  capabilities(): Promise<{ name: string; layout?: CreatedLayout }>;
  create(options: CreateOptions): Promise<{ id: string; layout?: CreatedLayout }>;
  start(id: string, onProgress?: (line: string) => void): Promise<Record<string, string>>;
  exec(id: string, command: string[], options?: ExecOptions): Promise<ExecOutcome>;
  copyIn(id: string, destPath: string, tar: AsyncIterable<Uint8Array>): Promise<void>;
  copyOut(id: string, srcPath: string, signal?: AbortSignal): AsyncIterable<Buffer>;
  remove(id: string): Promise<void>;
}

/** CopyIn chunk size the runners use. */
const copyInChunkBytes = 256 * 1024;

/** Re-cuts a byte stream into runner-sized chunks. */
async function* rechunk(source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let size = 0;
  for await (const piece of source) {
    pending.push(Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength));
    size += piece.byteLength;
    while (size >= copyInChunkBytes) {
      const all = Buffer.concat(pending);
      yield all.subarray(0, copyInChunkBytes);
      pending = [all.subarray(copyInChunkBytes)];
      size = all.length - copyInChunkBytes;
    }
  }
  if (size > 0) yield Buffer.concat(pending);
}

/** The raw calls whose shape is the same in plugin.v1 and plugin.v1alpha. */
interface SharedRawCalls {
  copyIn(
    messages: AsyncIterable<{ environmentId?: string; destPath?: string; data?: Buffer }>,
  ): Promise<unknown>;
  copyOut(
    request: { environmentId: string; srcPath: string },
    options: { signal?: AbortSignal },
  ): AsyncIterable<{ data: Buffer }>;
  remove(request: { environmentId: string }): Promise<unknown>;
}

function sameInBothGenerations(raw: SharedRawCalls): Pick<PluginClient, "copyIn" | "copyOut" | "remove"> {
  return {
    async copyIn(id, destPath, tar) {
      await raw.copyIn(copyInMessages(id, destPath, tar));
    },
    copyOut(id, srcPath, signal) {
      return dataOf(raw.copyOut({ environmentId: id, srcPath }, { signal }));
    },
    async remove(id) {
      await raw.remove({ environmentId: id });
    },
  };
}

/** CopyIn as the runners send it: ids in the first message only, then 256 KiB of data each. */
async function* copyInMessages(id: string, destPath: string, tar: AsyncIterable<Uint8Array>) {
  yield { environmentId: id, destPath, data: Buffer.alloc(0) };
  for await (const data of rechunk(tar)) yield { data };
}

async function* dataOf(chunks: AsyncIterable<{ data: Buffer }>): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) yield chunk.data;
}

export function v1Client(channel: Channel): PluginClient & { raw: V1Client } {
  const raw = createClient(V1Definition, channel);
  return {
    generation: "v1",
    raw,
    async capabilities() {
      const caps = await raw.capabilities({});
      return { name: caps.name, layout: { ...caps, tempPath: caps.runnerContext.temp ?? "" } };
    },
    async create(options) {
      const response = await raw.create({
        image: options.image ?? "",
        env: (options.env ?? []).map((entry) => Buffer.from(entry)),
        backendOptions: options.backendOptions ?? {},
        services: (options.services ?? []).map((s) => ({ env: {}, ports: [], ...s })),
      });
      return { id: response.environmentId };
    },
    async start(id) {
      return (await raw.start({ environmentId: id })).imageEnv;
    },
    async exec(id, command, options = {}) {
      const stream = raw.exec(
        {
          environmentId: id,
          command,
          env: options.env ?? {},
          user: options.user ?? "",
          workdir: options.workdir ?? "",
        },
        { signal: options.signal },
      );
      for await (const message of stream) {
        if (message.data.length > 0) {
          options.onOutput?.(message.stream === ExecOutput_Stream.STDERR ? "stderr" : "stdout", message.data);
        }
        if (message.done)
          return { exitCode: message.exitCode, errorMessage: message.errorMessage || undefined };
      }
      throw new Error("the Exec stream ended without a done message");
    },
    ...sameInBothGenerations(raw),
  };
}

export function v1alphaClient(channel: Channel): PluginClient & { raw: V1alphaClient } {
  const raw = createClient(V1alphaDefinition, channel);
  return {
    generation: "v1alpha",
    raw,
    async capabilities() {
      return { name: (await raw.capabilities({})).name };
    },
    async create(options) {
      const timeoutMs = options.timeoutMs;
      const response = await raw.create({
        image: options.image ?? "",
        backendOptions: options.backendOptions ?? {},
        services: (options.services ?? []).map((s) => ({ env: {}, ports: [], ...s })),
        labelArg: options.labelArg ?? "",
        environmentTimeout:
          timeoutMs === undefined
            ? undefined
            : { seconds: Math.floor(timeoutMs / 1000), nanos: (timeoutMs % 1000) * 1e6 },
      });
      return { id: response.environmentId, layout: response };
    },
    async start(id, onProgress) {
      for await (const message of raw.start({ environmentId: id })) {
        const output = message.output;
        if (output?.$case === "data") onProgress?.(output.value.data.toString().replace(/\n$/, ""));
        if (output?.$case === "startComplete") return output.value.imageEnv;
      }
      throw new Error("the Start stream ended without start_complete");
    },
    async exec(id, command, options = {}) {
      const stream = raw.exec(
        {
          environmentId: id,
          command,
          env: options.env ?? {},
          user: options.user,
          workdir: options.workdir ?? "",
        },
        { signal: options.signal },
      );
      for await (const message of stream) {
        const output = message.output;
        if (output?.$case === "data") {
          options.onOutput?.(
            output.value.stream === DataChunk_Stream.STDERR ? "stderr" : "stdout",
            output.value.data,
          );
        } else if (output?.$case === "execComplete") {
          return { exitCode: output.value.exitCode };
        } else if (output?.$case === "execFailed") {
          return { failed: output.value.errorMessage };
        }
      }
      throw new Error("the Exec stream ended without exec_complete or exec_failed");
    },
    ...sameInBothGenerations(raw),
  };
}

export function pluginClient(generation: Generation, channel: Channel): PluginClient {
  return generation === "v1" ? v1Client(channel) : v1alphaClient(channel);
}
