import type { ServerMiddleware } from "nice-grpc";
import type { Logger } from "pino";
import { type Caller, callerOf } from "../caller.js";
import type { RpcContextExt, RpcInfo } from "../protocol/common.js";

/** The listener as a call finds it when it comes in (a reload may change it for later calls). */
export interface ListenerView {
  address: string;
  /** The backend the listener creates environments on: the label of calls with no environment yet. */
  backend: string;
  /** Client identities allowed in (mutual TLS); undefined: any verified client. */
  allowedClients?: readonly string[];
}

/** The method called, as metrics, logs and audit records name it. */
export interface MethodNames {
  /** `Exec`, `Check`, … */
  name: string;
  /** `v1` or `v1alpha` for berth's plugin services, the service's full name for health and reflection. */
  protocol: string;
  /** One of berth's plugin services: refused while draining, counted in flight, audited. */
  plugin: boolean;
}

/** What callContextMiddleware adds to every call, for the middlewares after it (and the adapters). */
export interface CallContextExt extends RpcContextExt {
  caller: Caller | undefined;
  listener: ListenerView;
  rpcMethod: MethodNames;
}

/** A middleware after callContextMiddleware: it reads what that one added and adds nothing. */
export type Middleware = ServerMiddleware<unknown, CallContextExt>;

/**
 * Gives every call its caller, listener, method names, log and a place to
 * note its environment. The listener is read once, as the call comes in, so a
 * reload during the call does not change where it is allowed, counted or
 * audited.
 */
export function callContextMiddleware({
  logger,
  listener,
  backendOf,
}: {
  logger: Logger;
  /** The listener now (a reload may point it at another backend). */
  listener: () => ListenerView;
  /** The backend an environment id belongs to, if it exists. */
  backendOf: (id: string) => string | undefined;
}): ServerMiddleware<CallContextExt> {
  return async function* callContext(call, context) {
    const rpc: RpcInfo = {};
    return yield* call.next(call.request, {
      ...context,
      caller: callerOf(context.metadata),
      listener: listener(),
      rpcMethod: methodNames(call.method.path),
      rpc,
      log: logger.child({ rpc: call.method.path }),
      noteEnvironment(id) {
        rpc.environmentId = id;
        rpc.backend ??= backendOf(id);
      },
    });
  };
}

function methodNames(path: string): MethodNames {
  const [, service = "", name = path] = /^\/(.+)\/([^/]+)$/.exec(path) ?? [];
  const plugin = service.startsWith("plugin.");
  return { name, protocol: plugin ? service.replace(/^plugin\.(\w+)\..*$/, "$1") : service, plugin };
}
