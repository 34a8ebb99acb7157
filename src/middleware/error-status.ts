import { ServerError } from "nice-grpc";
import { BerthError, Status, isAbortError } from "../errors.js";
import type { Middleware } from "./call-context.js";

/**
 * The one place errors become gRPC statuses. A BerthError keeps its code and
 * message and is logged once, with the environment id; an unexpected
 * exception is a bug: logged with its stack, answered INTERNAL without one.
 * A cancelled call's error goes on as it is: its client has gone.
 */
export const errorStatusMiddleware: Middleware = async function* errorStatus(call, context) {
  try {
    return yield* call.next(call.request, context);
  } catch (err) {
    if (err instanceof ServerError) throw err;
    const { log, rpc } = context;
    if (err instanceof BerthError) {
      log.warn({ environmentId: rpc.environmentId, code: Status[err.code] }, err.message);
      throw new ServerError(err.code, err.message);
    }
    if (isAbortError(err) || context.signal.aborted) throw err;
    log.error({ environmentId: rpc.environmentId, err }, "unexpected error (a bug in berth)");
    throw new ServerError(
      Status.INTERNAL,
      `internal error in berth during ${call.method.path}; its log has the details`,
    );
  }
};

/** The status a call ended with, from what errorStatusMiddleware let out: a ServerError, or a cancellation. */
export function answeredStatus(err: unknown): Status {
  return err instanceof ServerError ? err.code : Status.CANCELLED;
}
