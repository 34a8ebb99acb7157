import { type AuditLog, argvDigest } from "../audit.js";
import { Status } from "../errors.js";
import type { Metrics } from "../metrics.js";
import type { Middleware } from "./call-context.js";
import { answeredStatus } from "./error-status.js";

/**
 * Counts and times every call in the metrics and gives it one debug log
 * line; gives every plugin call one audit record, written before the call
 * returns. Outside the error boundary, so what it records is the status the
 * client got.
 */
export function observeMiddleware({
  metrics,
  audit,
}: {
  metrics: Metrics;
  /** The audit log now (a reload may open another). */
  audit: () => AuditLog | undefined;
}): Middleware {
  return async function* observe(call, context) {
    const { rpcMethod, rpc, log, listener } = context;
    const started = performance.now();
    let code = Status.OK;
    try {
      return yield* call.next(call.request, context);
    } catch (err) {
      code = answeredStatus(err);
      throw err;
    } finally {
      const seconds = (performance.now() - started) / 1000;
      const durationMs = Math.round(seconds * 1000);
      const { protocol, name: method } = rpcMethod;
      const backend = rpc.backend ?? listener.backend;
      metrics.rpcRequests.inc({ protocol, backend, rpc: method, code: Status[code] });
      metrics.rpcDuration.observe({ protocol, backend, rpc: method }, seconds);
      log.debug({ environmentId: rpc.environmentId, code: Status[code], durationMs }, "rpc");
      const auditLog = audit();
      if (rpcMethod.plugin && auditLog) {
        const command =
          method === "Exec" ? (call.request as { command?: string[] } | undefined)?.command : undefined;
        await auditLog
          .record({
            time: new Date().toISOString(),
            caller: context.caller,
            listener: listener.address,
            protocol,
            backend,
            rpc: method,
            ...(rpc.environmentId ? { environmentId: rpc.environmentId } : {}),
            durationMs,
            outcome: code === Status.OK ? "ok" : code === Status.CANCELLED ? "cancelled" : "error",
            code: Status[code],
            ...(command ? { argv: argvDigest(command) } : {}),
          })
          .catch((err: unknown) => log.error({ err }, "cannot write the audit log"));
      }
    }
  };
}
