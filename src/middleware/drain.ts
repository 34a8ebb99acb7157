import { BerthError, Status } from "../errors.js";
import type { Middleware } from "./call-context.js";

/**
 * Counts plugin calls in flight, so shutdown can wait for them (and not for
 * health watches or reflection streams, which never end by themselves).
 */
export class PluginCallTracker {
  /** Set when shutdown begins: new plugin calls are refused from then on. */
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

/** Refuses new plugin calls once berth drains; counts the others in flight while they run. */
export function drainMiddleware(calls: PluginCallTracker): Middleware {
  return async function* drain(call, context) {
    if (!context.rpcMethod.plugin) return yield* call.next(call.request, context);
    if (calls.draining) {
      throw new BerthError(
        Status.UNAVAILABLE,
        "berth is shutting down and takes no new calls; retry against its next start",
      );
    }
    calls.enter();
    try {
      return yield* call.next(call.request, context);
    } finally {
      calls.leave();
    }
  };
}
