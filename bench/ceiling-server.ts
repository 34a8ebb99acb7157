/**
 * The benchmark's ceiling: a plugin.v1alpha server on berth's gRPC stack
 * (nice-grpc over grpc-js, berth's HTTP/2 windows, data codecs and message
 * limits) with none of berth's logic. A stand-in labelled as such, not a
 * backend: Exec of
 * `head -c N /dev/zero` streams N zero bytes from memory in 256 KiB
 * messages (the most berth puts in one), CopyIn counts what it receives,
 * CopyOut streams `--copy-out-bytes` zero bytes. What the Go client measures
 * against it is the most any server on this stack can do on this machine,
 * so berth's figures read against it show what berth's own pipeline costs.
 *
 *   node dist/bench/ceiling-server.js SOCKET_PATH COPY_OUT_BYTES
 *
 * Prints "serving" on stdout once it listens.
 */
import { createServer } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl } from "nice-grpc-server-health";
import { ServerError, Status } from "nice-grpc-common";
import { BackendPluginDefinition, DataChunk_Stream } from "../src/gen/plugin/v1alpha/plugin.js";
import { maxMessageBytes } from "../src/environments.js";
import { widenHttp2ReceiveWindows } from "../src/http2-windows.js";
import { v1alphaDataCodecs, withDataCodecs } from "../src/protocol/data-codecs.js";

const [socketPath, copyOutArg] = process.argv.slice(2);
const copyOutBytes = Number(copyOutArg);
if (!socketPath || !Number.isSafeInteger(copyOutBytes)) {
  console.error("usage: ceiling-server SOCKET_PATH COPY_OUT_BYTES");
  process.exit(2);
}

const zeros = Buffer.alloc(maxMessageBytes);

/** `bytes` zero bytes in messages of at most maxMessageBytes, each made by `toMessage`. */
function* zeroMessages<T>(bytes: number, toMessage: (data: Buffer) => T): Generator<T> {
  for (let sent = 0; sent < bytes; sent += zeros.length) {
    yield toMessage(zeros.subarray(0, Math.min(zeros.length, bytes - sent)));
  }
}

const unsupported = () => {
  throw new ServerError(Status.UNIMPLEMENTED, "the ceiling server only does Exec, CopyIn and CopyOut");
};

// The same HTTP/2 windows and data codecs as berth: the ceiling is of the stack as berth sets it up.
widenHttp2ReceiveWindows();
const server = createServer({
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
});
server.add(HealthDefinition, HealthServiceImpl());
server.add(withDataCodecs(BackendPluginDefinition, v1alphaDataCodecs), {
  capabilities: unsupported,
  create: unsupported,
  start: unsupported,
  remove: unsupported,
  async *exec(request) {
    const [program, flag, count] = request.command;
    if (program !== "head" || flag !== "-c") throw new ServerError(Status.INVALID_ARGUMENT, "only head -c N");
    yield* zeroMessages(Number(count), (data) => ({
      output: { $case: "data" as const, value: { stream: DataChunk_Stream.STDOUT, data } },
    }));
    yield { output: { $case: "execComplete" as const, value: { exitCode: 0 } } };
  },
  async copyIn(chunks) {
    let received = 0;
    for await (const chunk of chunks) received += chunk.data.length;
    if (received === 0) throw new ServerError(Status.INVALID_ARGUMENT, "no data");
    return {};
  },
  async *copyOut() {
    yield* zeroMessages(copyOutBytes, (data) => ({ data }));
  },
});
await server.listen(`unix:${socketPath}`);
console.log("serving");
process.once("SIGTERM", () => {
  server.forceShutdown();
  process.exit(0);
});
