import { ServerError, type ServerMiddleware } from "nice-grpc";
import type { Logger } from "pino";
import { type AuditLog, argvDigest } from "./audit.js";
import { type Caller, callerAllowed, callerOf, describeCaller } from "./caller.js";
import { BerthError, Status, isAbortError } from "./errors.js";
import type { Metrics } from "./metrics.js";
import type { CallerRateLimit } from "./rate-limit.js";
import type { RpcContextExt, RpcInfo } from "./protocol/common.js";
import { MalformedRequest } from "./protocol/malformed.js";

export interface BoundaryDeps {
  logger: Logger;
  calls: PluginCallTracker;
  /** Per-caller rate of health checks and Capabilities calls. */
  probes: CallerRateLimit;
  metrics: Metrics;
  /** The audit log now (a reload may open another). */
  audit: () => AuditLog | undefined;
  /** The listener now (a reload may point it at another backend). */
  listener: () => {
    address: string;
    /** The backend the listener creates environments on: the label of calls with no environment yet. */
    backend: string;
    /** Client identities allowed in (mutual TLS); undefined: any verified client. */
    allowedClients?: readonly string[];
  };
  /** The backend an environment id belongs to, if it exists. */
  backendOf: (id: string) => string | undefined;
}

/**
 * The one place errors become gRPC statuses. A BerthError keeps its code and
 * message; an unexpected exception is a bug: logged with its stack, answered
 * INTERNAL without one. Every call is counted and timed, gets one debug log
 * line, and plugin calls one audit record, written before the call returns.
 */
export function rpcBoundary(deps: BoundaryDeps): ServerMiddleware<RpcContextExt> {
  const { logger, calls, metrics } = deps;
  return async function* boundary(call, context) {
    const listener = deps.listener();
    const [, service = "", method = call.method.path] = /^\/(.+)\/([^/]+)$/.exec(call.method.path) ?? [];
    const plugin = service.startsWith("plugin.");
    const protocol = plugin ? service.replace(/^plugin\.(\w+)\..*$/, "$1") : service;
    const caller = callerOf(context.metadata);
    const rpc: RpcInfo = {};
    const log = logger.child({ rpc: call.method.path });
    const started = performance.now();
    let code = Status.OK;
    const note = (id: string) => {
      rpc.environmentId = id;
      rpc.backend ??= deps.backendOf(id);
    };
    try {
      if (listener.allowedClients && !callerAllowed(caller, listener.allowedClients)) {
        throw new BerthError(
          Status.PERMISSION_DENIED,
          `${describeCaller(caller)} is not allowed on ${listener.address} (tls.allowedClients)`,
        );
      }
      if (probeMethods.has(call.method.path) && !deps.probes.take(callerKey(caller, listener.address))) {
        throw new BerthError(
          Status.RESOURCE_EXHAUSTED,
          `${describeCaller(caller)} calls ${method} more often than berth allows (probesPerSecond); slow down`,
        );
      }
      if (plugin && calls.draining) {
        throw new BerthError(
          Status.UNAVAILABLE,
          "berth is shutting down and takes no new calls; retry against its next start",
        );
      }
      if (plugin) calls.enter();
      try {
        return yield* call.next(wellFormed(call.request, call.method.requestStream), {
          ...context,
          rpc,
          log,
          noteEnvironment: note,
        });
      } finally {
        if (plugin) calls.leave();
      }
    } catch (err) {
      if (err instanceof ServerError) {
        code = err.code;
        throw err;
      }
      if (err instanceof BerthError) {
        code = err.code;
        log.warn({ environmentId: rpc.environmentId, code: Status[code] }, err.message);
        throw new ServerError(err.code, err.message);
      }
      if (isAbortError(err) || context.signal.aborted) {
        code = Status.CANCELLED;
        throw err;
      }
      code = Status.INTERNAL;
      log.error({ environmentId: rpc.environmentId, err }, "unexpected error (a bug in berth)");
      throw new ServerError(
        Status.INTERNAL,
        `internal error in berth during ${call.method.path}; its log has the details`,
      );
    } finally {
      const seconds = (performance.now() - started) / 1000;
      const backend = rpc.backend ?? listener.backend;
      metrics.rpcRequests.inc({ protocol, backend, rpc: method, code: Status[code] });
      metrics.rpcDuration.observe({ protocol, backend, rpc: method }, seconds);
      log.debug(
        { environmentId: rpc.environmentId, code: Status[code], durationMs: Math.round(seconds * 1000) },
        "rpc",
      );
      const audit = deps.audit();
      if (plugin && audit) {
        const command =
          method === "Exec" ? (call.request as { command?: string[] } | undefined)?.command : undefined;
        await audit
          .record({
            time: new Date().toISOString(),
            caller,
            listener: listener.address,
            protocol,
            backend,
            rpc: method,
            ...(rpc.environmentId ? { environmentId: rpc.environmentId } : {}),
            durationMs: Math.round(seconds * 1000),
            outcome: code === Status.OK ? "ok" : code === Status.CANCELLED ? "cancelled" : "error",
            code: Status[code],
            ...(command ? { argv: argvDigest(command) } : {}),
          })
          .catch((err: unknown) => log.error({ err }, "cannot write the audit log"));
      }
    }
  };
}

/** The request, or its stream, refused with INVALID_ARGUMENT where a message did not decode. */
function wellFormed<Request>(request: Request, stream: boolean): Request {
  const refuse = (message: unknown) => {
    if (message instanceof MalformedRequest)
      throw new BerthError(Status.INVALID_ARGUMENT, message.describe());
  };
  if (!stream) {
    refuse(request);
    return request;
  }
  return (async function* () {
    for await (const message of request as AsyncIterable<unknown>) {
      refuse(message);
      yield message;
    }
  })() as Request;
}

/** The calls a client can flood cheaply, which berth rate-limits per caller. */
const probeMethods = new Set([
  "/grpc.health.v1.Health/Check",
  "/grpc.health.v1.Health/Watch",
  "/plugin.v1.BackendPlugin/Capabilities",
  "/plugin.v1alpha.BackendPlugin/Capabilities",
]);

/**
 * Whom a rate applies to: the client certificate, else the peer's address
 * without its port; on a unix socket (Node cannot read the peer's uid) every
 * client of the listener shares one.
 */
function callerKey(caller: Caller | undefined, listener: string): string {
  if (caller?.subject) return `tls:${caller.subject}`;
  if (caller?.transport === "tcp") return `tcp:${caller.address.replace(/:\d+$/, "")}`;
  return `listener:${listener}`;
}

/**
 * Counts plugin calls in flight, so shutdown can wait for them (and not for
 * health watches or reflection streams, which never end by themselves).
 */
export class PluginCallTracker {
  draining = false;
  private count = 0;
  private waiters: (() => void)[] = [];

  enter(): void {
    this.count++;
  }

  leave(): void {
    this.count--;
    if (this.count === 0) for (const wake of this.waiters.splice(0)) wake();
  }

  /** Resolves once no plugin call is in flight. */
  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}
