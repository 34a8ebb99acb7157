import { callerAllowed, describeCaller } from "../caller.js";
import { BerthError, Status } from "../errors.js";
import type { Middleware } from "./call-context.js";

/** Refuses a caller its listener's tls.allowedClients does not name, on every service. */
export const allowListMiddleware: Middleware = async function* allowList(call, context) {
  const { caller, listener } = context;
  if (listener.allowedClients && !callerAllowed(caller, listener.allowedClients)) {
    throw new BerthError(
      Status.PERMISSION_DENIED,
      `${describeCaller(caller)} is not allowed on ${listener.address} (tls.allowedClients)`,
    );
  }
  return yield* call.next(call.request, context);
};
