/**
 * Who is calling: the verified client certificate's subject and SANs on a
 * mutual-TLS listener, the peer address on TCP, the socket on a unix
 * listener. nice-grpc's call context has no TLS details, so a grpc-js server
 * interceptor reads them and hands them on in call metadata under a key that
 * no client can set (any client-sent value is removed first).
 */
import type { PeerCertificate } from "node:tls";
import { ServerInterceptingCall, type ServerInterceptor } from "@grpc/grpc-js";

const callerKey = "berth-internal-caller";

export interface Caller {
  transport: "tls" | "tcp" | "unix";
  /** Peer address (`ip:port`), or the listener's socket path for unix sockets. */
  address: string;
  /** Subject of the verified client certificate, e.g. `CN=runner-1,O=ci`. */
  subject?: string;
  /** Subject alternative names as OpenSSL prints them: `DNS:runner-1`, `URI:spiffe://…`. */
  sans?: string[];
}

/** Adds the caller to every call's metadata, for `callerOf`. */
export function callerInterceptor(listener: { kind: "unix" | "tcp"; address: string }): ServerInterceptor {
  return (_method, call) =>
    new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            metadata.remove(callerKey);
            const caller: Caller =
              listener.kind === "unix"
                ? { transport: "unix", address: listener.address }
                : certificateCaller(call.getAuthContext().sslPeerCertificate, call.getPeer());
            metadata.set(callerKey, JSON.stringify(caller));
            nextMetadata(metadata);
          },
        });
      },
    });
}

function certificateCaller(certificate: PeerCertificate | undefined, peer: string): Caller {
  // Node gives an empty object when the client sent no certificate.
  if (!certificate?.subject) return { transport: certificate ? "tls" : "tcp", address: peer };
  const subject = Object.entries(certificate.subject)
    .map(
      ([key, value]) =>
        `${key}=${(Array.isArray(value) ? value : [String(value)]).map(escapeDnValue).join("+")}`,
    )
    .join(",");
  // Node quotes a SAN whose value holds a comma ("URI:\"a, DNS:b\""): such a one stays whole.
  const sans = (certificate.subjectaltname ?? "").match(/(?:[^,"]|"(?:[^"\\]|\\.)*")+/g) ?? [];
  return { transport: "tls", address: peer, subject, sans: sans.map((name) => name.trim()).filter(Boolean) };
}

/**
 * A subject attribute's value as RFC 4514 writes it, with the characters
 * that separate attributes escaped, so that a value such as `evil,CN=admin`
 * cannot pass for another attribute.
 */
function escapeDnValue(value: string): string {
  return value.replace(/[\\,+"<>;=]/g, (char) => `\\${char}`);
}

/** The subject's one common name, unescaped; undefined when it has none, or several. */
function commonNameOf(subject: string): string | undefined {
  const names = (subject.match(/(?:[^,\\]|\\.)+/g) ?? [])
    .filter((attribute) => attribute.startsWith("CN="))
    .map((attribute) => attribute.slice(3).replace(/\\(.)/g, "$1"));
  return names.length === 1 ? names[0] : undefined;
}

/** The caller the interceptor recorded. */
export function callerOf(metadata: { get(key: string): unknown }): Caller | undefined {
  const value: unknown = metadata.get(callerKey);
  if (typeof value !== "string") return undefined;
  return JSON.parse(value) as Caller;
}

/**
 * Whether a caller is on an allow-list: an entry matches one of its SANs
 * (`DNS:runner-1`), its whole subject, or its subject's common name.
 */
export function callerAllowed(caller: Caller | undefined, allowed: readonly string[]): boolean {
  if (!caller?.subject) return false;
  const commonName = commonNameOf(caller.subject);
  return allowed.some(
    (entry) =>
      entry === caller.subject ||
      (commonName !== undefined && (entry === commonName || entry === `CN=${commonName}`)) ||
      caller.sans?.includes(entry),
  );
}

/** How a caller is named in logs and errors. */
export function describeCaller(caller: Caller | undefined): string {
  if (!caller) return "an unknown caller";
  if (caller.subject)
    return `client certificate ${caller.subject}${caller.sans?.length ? ` (${caller.sans.join(", ")})` : ""}`;
  return `${caller.transport} peer ${caller.address}`;
}
