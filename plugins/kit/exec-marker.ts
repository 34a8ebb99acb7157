/**
 * Finding a command's processes inside a container, for drivers whose exec
 * API has no kill (Docker's, Kubernetes'): every command runs with a unique
 * marker variable in its environment, which its children inherit, and a
 * second exec signals every process that carries it.
 */
import { randomUUID } from "node:crypto";

/** The variable that carries the marker. */
export const execMarkerVariable = "BERTH_EXEC_ID";

/** A new marker, as the `NAME=value` entry it is in /proc/PID/environ. */
export function newExecMarker(): string {
  return `${execMarkerVariable}=${randomUUID()}`;
}

/**
 * Signals every process whose environment holds the marker. Run as
 * `sh -c killMarkedScript sh SIGNAL MARKER`; needs sh, tr and grep in the image.
 */
export const killMarkedScript = `sig=$1; marker=$2
for d in /proc/[0-9]*; do
  if tr '\\0' '\\n' < "$d/environ" 2>/dev/null | grep -qx "$marker"; then kill -s "$sig" "\${d#/proc/}" 2>/dev/null; fi
done`;
