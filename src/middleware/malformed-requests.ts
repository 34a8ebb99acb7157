import { BerthError, Status } from "../errors.js";
import { MalformedRequest } from "../protocol/malformed.js";
import type { Middleware } from "./call-context.js";

/**
 * Refuses a request that did not decode, with INVALID_ARGUMENT: the client's
 * fault, not berth's. A streamed request's messages are checked as the
 * handler reads them.
 */
export const malformedRequestMiddleware: Middleware = async function* malformedRequests(call, context) {
  if (call.requestStream) return yield* call.next(refusingMalformed(call.request), context);
  refuseMalformed(call.request);
  return yield* call.next(call.request, context);
};

async function* refusingMalformed<Request>(messages: AsyncIterable<Request>): AsyncIterable<Request> {
  for await (const message of messages) {
    refuseMalformed(message);
    yield message;
  }
}

function refuseMalformed(message: unknown): void {
  if (message instanceof MalformedRequest) throw new BerthError(Status.INVALID_ARGUMENT, message.describe());
}
