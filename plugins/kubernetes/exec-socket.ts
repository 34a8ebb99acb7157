import type { Readable, Writable } from "node:stream";
import type { KubeConfig } from "@kubernetes/client-node";
import WebSocket from "ws";
import { unavailable } from "../../src/errors.js";
import { kubernetesError } from "./errors.js";

/**
 * The pod exec subresource over WebSocket. client-node's own Exec has no flow
 * control (a slow gRPC client would make it buffer a whole 256 MiB output,
 * and stdin is pushed without waiting), so berth speaks the channel protocol
 * itself: one byte of channel number, then the payload.
 */

/** v5 adds the close-stdin signal (Kubernetes 1.30+); older servers pick v4. */
const subprotocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const channel = { stdin: 0, stdout: 1, stderr: 2, status: 3, close: 255 } as const;

/** The status channel's message: a metav1.Status. */
interface ExecStatus {
  status?: string;
  message?: string;
  reason?: string;
  details?: { causes?: { reason?: string; message?: string }[] };
}

/** How a command ended, by the status channel. */
export type ExecEnd =
  | { kind: "exited"; exitCode: number }
  /** The API server ran nothing or reported an error that is not an exit code. */
  | { kind: "error"; message: string };

export interface ExecTarget {
  namespace: string;
  pod: string;
  container: string;
  command: string[];
}

export interface ExecStreams {
  stdout?: Writable;
  stderr?: Writable;
  /** Sent as the command's stdin; ends the input when it ends (see `ExecSession.inputClosable`). */
  stdin?: Readable;
}

export interface ExecOptions {
  signal: AbortSignal;
  /** Interval of WebSocket pings, so an idle proxy does not cut a silent command. */
  keepaliveMs: number;
}

/** An open exec connection. */
export interface ExecSession {
  /** Resolves with the status once the command ends; rejects if the connection drops first. */
  ended: Promise<ExecEnd>;
  /**
   * Whether the server understands "stdin ended" (v5). On v4 the only way to
   * end the input is to close the connection, which also loses the status.
   */
  inputClosable: boolean;
  /** Resolves when all of stdin has been handed to the socket. */
  inputSent: Promise<void>;
  /** Close the connection (the command may go on running in the pod). */
  close(): void;
  /** Drop the connection at once, without the closing handshake (its reader went away). */
  abandon(): void;
}

/** Opens `command` in the container and wires its streams, honouring backpressure both ways. */
export async function openExec(
  kubeConfig: KubeConfig,
  target: ExecTarget,
  streams: ExecStreams,
  options: ExecOptions,
): Promise<ExecSession> {
  const socket = await connectExecSocket(kubeConfig, target, streams, options.signal);
  const inputClosable = socket.protocol === "v5.channel.k8s.io";
  const ended = receiveUntilEnd(socket, target, streams, options);
  // A caller that only looks at `inputSent` must not trip an unhandled rejection.
  ended.catch(() => undefined);

  const inputSent = streams.stdin ? sendInput(socket, streams.stdin, inputClosable) : Promise.resolve();
  inputSent.catch(() => socket.terminate());
  return { ended, inputClosable, inputSent, close: () => socket.close(), abandon: () => socket.terminate() };
}

/** The exec subresource's WebSocket address for the target, asking for the streams it has. */
function execUrl(server: string, target: ExecTarget, streams: ExecStreams): URL {
  const query = new URLSearchParams({ container: target.container });
  for (const arg of target.command) query.append("command", arg);
  if (streams.stdout) query.set("stdout", "true");
  if (streams.stderr) query.set("stderr", "true");
  if (streams.stdin) query.set("stdin", "true");
  const url = new URL(
    `${server.replace(/\/$/, "")}/api/v1/namespaces/${encodeURIComponent(target.namespace)}/pods/${encodeURIComponent(target.pod)}/exec?${query.toString()}`,
  );
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
}

/** Opens the exec's WebSocket; a refused upgrade fails with the API server's answer. */
async function connectExecSocket(
  kubeConfig: KubeConfig,
  target: ExecTarget,
  streams: ExecStreams,
  signal: AbortSignal,
): Promise<WebSocket> {
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) throw unavailable("the kubeconfig has no current cluster");
  const url = execUrl(cluster.server, target, streams);
  const socketOptions: WebSocket.ClientOptions = {};
  await kubeConfig.applyToHTTPSOptions(socketOptions);

  const socket = new WebSocket(url, subprotocols, {
    ...socketOptions,
    perMessageDeflate: false,
    handshakeTimeout: 30_000,
  });
  await new Promise<void>((resolve, reject) => {
    const abort = () => {
      socket.terminate();
      reject(signal.reason as Error);
    };
    signal.addEventListener("abort", abort, { once: true });
    socket.once("open", () => {
      signal.removeEventListener("abort", abort);
      resolve();
    });
    socket.once("unexpected-response", (_request, response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (text: string) => (body += text.slice(0, 4096)));
      response.on("end", () => {
        signal.removeEventListener("abort", abort);
        reject(kubernetesError({ code: response.statusCode, body }, `exec in pod ${target.pod}`));
      });
    });
    socket.once("error", (err) => {
      signal.removeEventListener("abort", abort);
      reject(unavailable(`exec in pod ${target.pod}: cannot reach the Kubernetes API: ${err.message}`, err));
    });
  });
  return socket;
}

/**
 * Keeps the connection alive and hands the command's output to its sinks
 * until the connection closes; resolves with the command's status, rejects
 * when the connection closed before the status came.
 */
function receiveUntilEnd(
  socket: WebSocket,
  target: ExecTarget,
  streams: ExecStreams,
  options: ExecOptions,
): Promise<ExecEnd> {
  const pinger = setInterval(() => socket.ping(), options.keepaliveMs);
  let outputPaused = 0;
  // A sink that is closed while it holds the socket back (its reader went away) must let go too,
  // or the socket stays paused and never even reads the server's close.
  const pauseUntilDrained = (sink: Writable) => {
    outputPaused++;
    socket.pause();
    const go = () => {
      sink.off("drain", go);
      sink.off("close", go);
      if (--outputPaused === 0) socket.resume();
    };
    sink.on("drain", go);
    sink.on("close", go);
  };
  const deliver = (sink: Writable | undefined, payload: Buffer) => {
    if (payload.length === 0 || !sink || sink.destroyed) return;
    if (!sink.write(payload)) pauseUntilDrained(sink);
  };

  return new Promise<ExecEnd>((resolve, reject) => {
    let status: ExecEnd | undefined;
    socket.on("message", (data: Buffer, isBinary) => {
      if (!isBinary || data.length === 0) return;
      const payload = data.subarray(1);
      switch (data[0]) {
        case channel.stdout:
          deliver(streams.stdout, payload);
          break;
        case channel.stderr:
          deliver(streams.stderr, payload);
          break;
        case channel.status:
          status = parseStatus(payload.toString("utf8"));
          break;
      }
    });
    socket.once("close", (code, reason) => {
      clearInterval(pinger);
      if (status) resolve(status);
      else if (options.signal.aborted) reject(options.signal.reason as Error);
      else {
        reject(
          unavailable(
            `the exec connection to pod ${target.pod} closed before the command's exit status arrived ` +
              `(WebSocket close ${code}${reason.length > 0 ? `: ${reason.toString()}` : ""}); the command's outcome is unknown`,
          ),
        );
      }
    });
    socket.on("error", () => {
      // "close" follows every error and settles the promise.
    });
  });
}

/** Most bytes berth lets the socket hold before waiting: flow control for stdin. */
const inputHighWater = 1024 * 1024;

async function sendInput(socket: WebSocket, input: Readable, closable: boolean): Promise<void> {
  const send = (frame: Buffer) =>
    new Promise<void>((resolve, reject) => {
      socket.send(frame, { binary: true }, (err) => (err ? reject(err) : resolve()));
    });
  for await (const chunk of input as AsyncIterable<Buffer>) {
    if (socket.readyState !== WebSocket.OPEN) {
      throw unavailable("the exec connection closed while berth was still sending input");
    }
    const frame = Buffer.allocUnsafe(chunk.length + 1);
    frame[0] = channel.stdin;
    chunk.copy(frame, 1);
    const sent = send(frame);
    // Wait for the socket to take this frame only when it holds a lot already.
    if (socket.bufferedAmount > inputHighWater) await sent;
    else sent.catch(() => undefined);
  }
  if (closable) await send(Buffer.from([channel.close, channel.stdin]));
}

function parseStatus(text: string): ExecEnd {
  let status: ExecStatus;
  try {
    status = JSON.parse(text) as ExecStatus;
  } catch {
    return {
      kind: "error",
      message: `unreadable exec status from the Kubernetes API: ${text.slice(0, 200)}`,
    };
  }
  if (status.status === "Success") return { kind: "exited", exitCode: 0 };
  const exitCause = status.details?.causes?.find((cause) => cause.reason === "ExitCode");
  if (status.reason === "NonZeroExitCode" && exitCause?.message !== undefined) {
    const exitCode = Number(exitCause.message);
    if (Number.isInteger(exitCode)) return { kind: "exited", exitCode };
  }
  return { kind: "error", message: status.message ?? status.reason ?? text };
}
