import { Status } from "nice-grpc-common";

export { Status };

/**
 * The one error type of berth's core: a gRPC status code and a message meant
 * for the person reading the job log. Drivers translate their backend's
 * errors into it; the server's error boundary turns it into the gRPC status.
 */
export class BerthError extends Error {
  /** Set on NOT_FOUND for a path inside an environment (not an unknown environment id). */
  readonly missingPath?: boolean;

  constructor(
    readonly code: Status,
    message: string,
    options?: { cause?: unknown; missingPath?: boolean },
  ) {
    super(message, options);
    this.name = "BerthError";
    if (options?.missingPath) this.missingPath = true;
  }
}

export const invalidArgument = (message: string): BerthError =>
  new BerthError(Status.INVALID_ARGUMENT, message);
export const notFound = (message: string): BerthError => new BerthError(Status.NOT_FOUND, message);
/** A path the call names does not exist in the environment (drivers' CopyOut of a missing path). */
export const missingPath = (message: string): BerthError =>
  new BerthError(Status.NOT_FOUND, message, { missingPath: true });
export const failedPrecondition = (message: string): BerthError =>
  new BerthError(Status.FAILED_PRECONDITION, message);
export const permissionDenied = (message: string): BerthError =>
  new BerthError(Status.PERMISSION_DENIED, message);
export const unavailable = (message: string, cause?: unknown): BerthError =>
  new BerthError(Status.UNAVAILABLE, message, { cause });

/** The message of anything thrown, for wrapping it into a BerthError. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** True for the error an aborted AbortSignal produces (cancelled call). */
export function isAbortError(err: unknown): boolean {
  return err instanceof Error && err.name === "AbortError";
}
