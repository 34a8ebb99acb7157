import { Status } from "../../src/errors.js";

/**
 * The status of a backend's HTTP answer (the Docker engine's, the
 * Kubernetes API server's), one table for every driver. 409 is a conflict
 * with the object's state (a stopped container, a pod that already
 * exists); 429 and the gateway errors are worth trying again; any other
 * 5xx is the backend's own failure, whose outcome berth cannot know.
 */
export function statusOfHttp(code: number): Status {
  switch (code) {
    case 400:
    case 422:
      return Status.INVALID_ARGUMENT;
    case 401:
      return Status.UNAUTHENTICATED;
    case 403:
      return Status.PERMISSION_DENIED;
    case 404:
      return Status.NOT_FOUND;
    case 409:
      return Status.FAILED_PRECONDITION;
    case 429:
    case 502:
    case 503:
    case 504:
      return Status.UNAVAILABLE;
    default:
      return Status.UNKNOWN;
  }
}
