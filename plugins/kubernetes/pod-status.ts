import type { CoreV1Event, V1ContainerStatus, V1Pod } from "@kubernetes/client-node";

/** Where a booting pod stands, judged from its status alone. */
export type PodVerdict =
  | { state: "ready" }
  | { state: "waiting"; why: string }
  | { state: "failed"; reason: string; container?: string };

/** Waiting reasons that will not clear up by themselves within a CI job's patience. */
const hopelessWaiting = new Set([
  "ErrImagePull",
  "ImagePullBackOff",
  "ErrImageNeverPull",
  "InvalidImageName",
  "CreateContainerConfigError",
  "CreateContainerError",
  "CrashLoopBackOff",
  "RunContainerError",
]);

export function judgePod(pod: V1Pod): PodVerdict {
  const status = pod.status ?? {};
  if (status.phase === "Failed" || status.phase === "Succeeded") {
    return {
      state: "failed",
      reason: `the pod ended (${status.phase}${status.reason ? `: ${status.reason}` : ""}${status.message ? `: ${status.message}` : ""})`,
    };
  }
  const scheduled = status.conditions?.find((c) => c.type === "PodScheduled");
  if (scheduled?.status === "False" && scheduled.reason === "Unschedulable") {
    return {
      state: "failed",
      reason: `the pod cannot be scheduled: ${scheduled.message ?? "Unschedulable"}`,
    };
  }
  // An administrator's template may hold ordinary init containers: one that exited 0 has done its
  // work. A native sidecar (an init container with restartPolicy Always) must run, as a container must.
  const sidecars = new Set(
    (pod.spec?.initContainers ?? []).filter((c) => c.restartPolicy === "Always").map((c) => c.name),
  );
  const completed = (c: V1ContainerStatus) => !sidecars.has(c.name) && c.state?.terminated?.exitCode === 0;
  const statuses = [...(status.initContainerStatuses ?? []), ...(status.containerStatuses ?? [])];
  for (const container of statuses) {
    const failure = completed(container) ? undefined : containerFailure(container);
    if (failure) return { state: "failed", reason: failure, container: container.name };
  }
  const expected = (pod.spec?.containers.length ?? 0) + (pod.spec?.initContainers?.length ?? 0);
  const notReady = statuses.filter((c) => !c.ready && !completed(c));
  if (statuses.length === expected && notReady.length === 0 && status.phase === "Running") {
    return { state: "ready" };
  }
  if (!scheduled || scheduled.status !== "True") return { state: "waiting", why: "waiting to be scheduled" };
  const waiting = notReady.map(
    (c) => `${c.name}: ${c.state?.waiting?.reason ?? (c.state?.running ? "running, not ready" : "starting")}`,
  );
  return { state: "waiting", why: waiting.length > 0 ? waiting.join(", ") : "starting containers" };
}

function containerFailure(container: V1ContainerStatus): string | undefined {
  const waiting = container.state?.waiting;
  if (waiting?.reason && hopelessWaiting.has(waiting.reason)) {
    return `container ${container.name} (image ${container.image}): ${waiting.reason}${waiting.message ? `: ${waiting.message}` : ""}`;
  }
  const terminated = container.state?.terminated;
  if (terminated) {
    return `container ${container.name} exited (${terminated.reason ?? "terminated"}, exit code ${terminated.exitCode}${terminated.message ? `: ${terminated.message.trim()}` : ""})`;
  }
  return undefined;
}

/** A progress line for the job log from a pod event, e.g. "Pulling: Pulling image "busybox"". */
export function eventLine(event: CoreV1Event): string {
  const container = /spec\.(?:initContainers|containers)\{(.+)\}/.exec(
    event.involvedObject.fieldPath ?? "",
  )?.[1];
  return `${container ? `${container}: ` : ""}${event.reason ?? "Event"}: ${event.message ?? ""}`.trim();
}
