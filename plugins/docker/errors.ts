import { BerthError, Status, messageOf } from "../../src/errors.js";
import { statusOfHttp } from "../kit/http-status.js";

interface DockerodeError {
  statusCode?: number;
  code?: string;
  json?: { message?: string } | null;
  reason?: string;
}

/** The engine's own words for an error, without dockerode's "(HTTP code …)" wrapping. */
export function engineMessage(err: unknown): string {
  const { json } = (err ?? {}) as DockerodeError;
  return (json?.message ?? messageOf(err)).replace(/^\(HTTP code \d+\) [^-]*- /, "").trim();
}

/** The request never got an answer: the connection to the engine failed (ECONNREFUSED, EPIPE, …). */
export function isConnectionError(err: unknown): boolean {
  const { statusCode, code } = (err ?? {}) as DockerodeError;
  return statusCode === undefined && code !== undefined;
}

export function isNotFound(err: unknown): boolean {
  return (err as DockerodeError | undefined)?.statusCode === 404;
}

const addressPoolsExhausted = /could not find an available, non-overlapping IPv4 address pool/;

/** Translates a Docker engine (or connection) error into a BerthError saying what berth was doing. */
export function dockerError(err: unknown, doing: string): BerthError {
  if (err instanceof BerthError) return err;
  const { statusCode, code } = (err ?? {}) as DockerodeError;
  const message = `${doing}: ${engineMessage(err)}`;
  if (isConnectionError(err)) {
    return new BerthError(
      Status.UNAVAILABLE,
      `${doing}: cannot reach the Docker engine (${code}): ${messageOf(err)}`,
      {
        cause: err,
      },
    );
  }
  if (addressPoolsExhausted.test(message)) {
    // The engine says 404 here, but nothing is missing: every address pool holds a network.
    return new BerthError(
      Status.RESOURCE_EXHAUSTED,
      `${message} (every bridge network address pool of the engine is in use: remove networks left over ` +
        "with `berth gc` or `docker network prune`, or give dockerd more default-address-pools)",
      { cause: err },
    );
  }
  const status = statusCode === undefined ? Status.UNKNOWN : statusOfHttp(statusCode);
  return new BerthError(status, message, { cause: err });
}
