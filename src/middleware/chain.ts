import { type ServerMiddleware, composeServerMiddleware } from "nice-grpc";
import type { Logger } from "pino";
import type { AuditLog } from "../audit.js";
import type { Metrics } from "../metrics.js";
import type { CallerRateLimit } from "../rate-limit.js";
import { allowListMiddleware } from "./allow-list.js";
import { type CallContextExt, type ListenerView, callContextMiddleware } from "./call-context.js";
import { type PluginCallTracker, drainMiddleware } from "./drain.js";
import { errorStatusMiddleware } from "./error-status.js";
import { malformedRequestMiddleware } from "./malformed-requests.js";
import { observeMiddleware } from "./observe.js";
import { probeRateLimitMiddleware } from "./probe-rate-limit.js";

export interface ChainDeps {
  logger: Logger;
  /** The listener now (a reload may point it at another backend). */
  listener: () => ListenerView;
  /** The backend an environment id belongs to, if it exists. */
  backendOf: (id: string) => string | undefined;
  metrics: Metrics;
  /** The audit log now (a reload may open another). */
  audit: () => AuditLog | undefined;
  probes: CallerRateLimit;
  calls: PluginCallTracker;
}

/**
 * Every call's way through berth's middlewares, outermost first: the call's
 * context, which the others read; observe, outside the error boundary so
 * that metrics, the debug line and the audit record see the status the
 * client got, refusals included; the one error boundary; the refusals, in
 * the order their statuses take precedence (not allowed, too often,
 * shutting down), drain last so that only calls it lets through count as
 * in flight; innermost the malformed-request check, which wraps the very
 * request the adapter reads.
 */
export function middlewareChain(deps: ChainDeps): ServerMiddleware<CallContextExt> {
  const { logger, listener, backendOf } = deps;
  return [
    observeMiddleware({ metrics: deps.metrics, audit: deps.audit }),
    errorStatusMiddleware,
    allowListMiddleware,
    probeRateLimitMiddleware(deps.probes),
    drainMiddleware(deps.calls),
    malformedRequestMiddleware,
  ].reduce<ServerMiddleware<CallContextExt>>(
    (chain, next) => composeServerMiddleware(chain, next),
    callContextMiddleware({ logger, listener, backendOf }),
  );
}
