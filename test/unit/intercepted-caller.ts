/**
 * Runs berth's caller interceptor (src/caller.ts) on one call, in process: a
 * stand-in for grpc-js's server call carries the connection's peer address
 * and client certificate, and what the interceptor passes on is returned as
 * nice-grpc hands it to the server's middleware (context.metadata).
 * No socket and no TLS handshake are involved.
 */
import type { PeerCertificate } from "node:tls";
import { Metadata, type ServerInterceptingCallInterface, type ServerMethodDefinition } from "@grpc/grpc-js";
import { Metadata as CallMetadata } from "nice-grpc-common";
import { callerInterceptor } from "../../src/caller.js";

/** A client certificate as Node reports a verified peer's. */
export function peerCertificate(
  subject: PeerCertificate["subject"],
  subjectaltname?: string,
): PeerCertificate {
  return {
    ca: false,
    raw: Buffer.alloc(0),
    subject,
    issuer: { CN: "test CA" },
    valid_from: "Jan  1 00:00:00 2025 GMT",
    valid_to: "Jan  1 00:00:00 2035 GMT",
    serialNumber: "01",
    fingerprint: "",
    fingerprint256: "",
    fingerprint512: "",
    ...(subjectaltname === undefined ? {} : { subjectaltname }),
  };
}

type InterceptingServerListener = Parameters<ServerInterceptingCallInterface["start"]>[0];

const method: ServerMethodDefinition<unknown, unknown> = {
  path: "/plugin.v1alpha.BackendPlugin/Exec",
  requestStream: false,
  responseStream: true,
  requestDeserialize: (bytes) => bytes,
  responseSerialize: () => Buffer.alloc(0),
};

const unused = (): never => {
  throw new Error("the caller interceptor does not use this");
};

/**
 * The metadata the handler sees after the interceptor ran on a call with
 * these connection details and this client-sent metadata. `certificate`
 * undefined is a connection without TLS; Node reports `{}` for a TLS client
 * that sent no certificate.
 */
export function interceptedMetadata(
  listener: { kind: "unix" | "tcp"; address: string },
  connection: { peer: string; certificate?: PeerCertificate | Record<string, never> },
  sent: Record<string, string> = {},
): CallMetadata {
  let inner: InterceptingServerListener | undefined;
  const call: ServerInterceptingCallInterface = {
    start: (listener) => (inner = listener),
    getPeer: () => connection.peer,
    getAuthContext: () => ({ sslPeerCertificate: connection.certificate as PeerCertificate | undefined }),
    sendMetadata: unused,
    sendMessage: unused,
    sendStatus: unused,
    startRead: unused,
    getDeadline: () => Infinity,
    getHost: () => "localhost",
    getConnectionInfo: () => ({}),
    getMetricsRecorder: unused,
  };
  let received: Metadata | undefined;
  callerInterceptor(listener)(method, call).start({
    onReceiveMetadata: (metadata) => (received = metadata),
    onReceiveMessage: () => {},
    onReceiveHalfClose: () => {},
    onCancel: () => {},
  });
  const metadata = new Metadata();
  for (const [key, value] of Object.entries(sent)) metadata.set(key, value);
  if (!inner) throw new Error("the interceptor did not start the call");
  inner.onReceiveMetadata(metadata);
  if (!received) throw new Error("the interceptor did not pass the metadata on");
  // As nice-grpc converts grpc-js metadata for its call context.
  const converted = CallMetadata();
  for (const key of Object.keys(received.getMap())) converted.set(key, received.get(key));
  return converted;
}
