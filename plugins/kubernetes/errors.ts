import { BerthError, Status, messageOf } from "../../src/errors.js";
import { statusOfHttp } from "../kit/http-status.js";

/** What client-node's ApiException carries (and what berth builds from an exec upgrade's answer). */
interface ApiFailure {
  code?: number;
  body?: unknown;
}

/** The API server's own words: the `message` of the metav1.Status it answered with. */
export function apiMessage(err: unknown): string {
  const { body } = (err ?? {}) as ApiFailure;
  let status: unknown = body;
  if (typeof body === "string") {
    try {
      status = JSON.parse(body);
    } catch {
      return body.trim() || messageOf(err);
    }
  }
  const message = (status as { message?: unknown } | undefined)?.message;
  return typeof message === "string" ? message : messageOf(err);
}

export function statusCodeOf(err: unknown): number | undefined {
  const { code } = (err ?? {}) as ApiFailure;
  return typeof code === "number" && code >= 100 ? code : undefined;
}

export function isNotFound(err: unknown): boolean {
  return statusCodeOf(err) === 404;
}

/** Translates a Kubernetes API (or connection) error into a BerthError saying what berth was doing. */
export function kubernetesError(err: unknown, doing: string): BerthError {
  if (err instanceof BerthError) return err;
  const code = statusCodeOf(err);
  if (code === undefined) {
    return new BerthError(
      Status.UNAVAILABLE,
      `${doing}: cannot reach the Kubernetes API: ${messageOf(err)}`,
      { cause: err },
    );
  }
  const message = `${doing}: ${apiMessage(err)}`;
  return new BerthError(statusOfHttp(code), message, { cause: err });
}
