import { type Caller, describeCaller } from "../caller.js";
import { BerthError, Status } from "../errors.js";
import type { CallerRateLimit } from "../rate-limit.js";
import type { Middleware } from "./call-context.js";

/** The calls a client can flood cheaply, which berth rate-limits per caller. */
const probeMethods = new Set([
  "/grpc.health.v1.Health/Check",
  "/grpc.health.v1.Health/Watch",
  "/plugin.v1.BackendPlugin/Capabilities",
  "/plugin.v1alpha.BackendPlugin/Capabilities",
]);

/** Refuses a caller's health checks and Capabilities calls beyond probesPerSecond. */
export function probeRateLimitMiddleware(probes: CallerRateLimit): Middleware {
  return async function* probeRateLimit(call, context) {
    const { caller, listener } = context;
    if (probeMethods.has(call.method.path) && !probes.take(callerKey(caller, listener.address))) {
      throw new BerthError(
        Status.RESOURCE_EXHAUSTED,
        `${describeCaller(caller)} calls ${context.rpcMethod.name} more often than berth allows (probesPerSecond); slow down`,
      );
    }
    return yield* call.next(call.request, context);
  };
}

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
