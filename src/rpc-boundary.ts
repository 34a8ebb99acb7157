import { ServerError, type ServerMiddleware } from "nice-grpc";
import type { Logger } from "pino";
import { BerthError, Status, isAbortError } from "./errors.js";
import type { RpcContextExt, RpcInfo } from "./protocol/common.js";

/**
 * The one place errors become gRPC statuses. A BerthError keeps its code and
 * message; an unexpected exception is a bug: logged with its stack, answered
 * INTERNAL without one. Every call gets one debug log line.
 */
export function rpcBoundary(logger: Logger, calls: PluginCallTracker): ServerMiddleware<RpcContextExt> {
  return async function* boundary(call, context) {
    const tracked = call.method.path.startsWith("/plugin.");
    if (tracked && calls.draining) {
      throw new ServerError(
        Status.UNAVAILABLE,
        "berth is shutting down and takes no new calls; retry against its next start",
      );
    }
    if (tracked) calls.enter();
    const rpc: RpcInfo = {};
    const log = logger.child({ rpc: call.method.path });
    const started = performance.now();
    let code = Status.OK;
    try {
      return yield* call.next(call.request, { ...context, rpc, log });
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
      if (tracked) calls.leave();
      log.debug(
        {
          environmentId: rpc.environmentId,
          code: Status[code],
          durationMs: Math.round(performance.now() - started),
        },
        "rpc",
      );
    }
  };
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
