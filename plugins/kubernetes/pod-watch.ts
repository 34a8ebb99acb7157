import {
  type CoreV1Api,
  type CoreV1Event,
  type KubeConfig,
  type V1Pod,
  Watch,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import { BerthError, Status, failedPrecondition } from "../../src/errors.js";
import { isNotFound, kubernetesError } from "./errors.js";
import type { KubernetesOptions } from "./options.js";
import { eventLine, judgePod } from "./pod-status.js";
import type { KubernetesEnvironment } from "./state.js";

/**
 * Job pods watched through the API server until they are ready or gone. The
 * watches it holds open are stopped by stopAll, so the daemon can exit.
 */
export class PodWatcher {
  private readonly watches = new Set<AbortController>();

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly options: Pick<KubernetesOptions, "startTimeoutMs" | "removeGraceSeconds">,
    private readonly logger: Logger,
  ) {}

  /** Watches the pod (and its events, for progress) until it is ready, fails or the timeout passes. */
  async waitUntilReady(
    env: KubernetesEnvironment,
    progress: (line: string) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const events: CoreV1Event[] = [];
    const seenEvents = new Set<string>();
    let lastWhy = "";
    let timer: NodeJS.Timeout | undefined;
    const stopped = new AbortController();
    try {
      await new Promise<void>((resolve, reject) => {
        const fail = (err: unknown) => reject(kubernetesError(err, `watch pod ${env.pod}`));
        timer = setTimeout(
          () =>
            reject(
              new BerthError(
                Status.DEADLINE_EXCEEDED,
                `pod ${env.pod} was not ready within ${this.options.startTimeoutMs / 1000} s (${lastWhy || "no status yet"})${lastWarning(events)}`,
              ),
            ),
          this.options.startTimeoutMs,
        );
        signal.addEventListener("abort", () => reject(signal.reason as Error), { once: true });
        const onPod = (pod: V1Pod) => {
          const verdict = judgePod(pod);
          if (verdict.state === "ready") resolve();
          else if (verdict.state === "failed") {
            reject(
              failedPrecondition(
                `pod ${env.pod} cannot start: ${verdict.reason}${lastWarning(events, verdict.container)}`,
              ),
            );
          } else {
            lastWhy = verdict.why;
          }
        };
        this.watchUntil(
          `/api/v1/namespaces/${env.namespace}/pods`,
          { fieldSelector: `metadata.name=${env.pod}` },
          (type, pod: V1Pod) => {
            if (type === "DELETED") reject(failedPrecondition(`pod ${env.pod} was deleted while starting`));
            else onPod(pod);
          },
          stopped.signal,
          fail,
        );
        this.watchUntil(
          `/api/v1/namespaces/${env.namespace}/events`,
          { fieldSelector: `involvedObject.name=${env.pod}` },
          (_type, event: CoreV1Event) => {
            const key = event.metadata.uid ?? eventLine(event);
            if (seenEvents.has(key)) return;
            seenEvents.add(key);
            events.push(event);
            progress(eventLine(event));
          },
          stopped.signal,
          () => undefined, // events only add progress lines; the pod watch decides
        );
      });
    } finally {
      clearTimeout(timer);
      stopped.abort();
    }
  }

  /**
   * Keeps a watch open until `stop`; the API server ends watches after a
   * while, so it is re-opened (the first answers replay the current state).
   */
  private watchUntil<T>(
    path: string,
    query: Record<string, string>,
    onEvent: (type: string, object: T) => void,
    stop: AbortSignal,
    onError: (err: unknown) => void,
  ): void {
    const open = () => {
      if (stop.aborted) return;
      new Watch(this.kubeConfig)
        .watch(path, query, onEvent, (err: unknown) => {
          if (stop.aborted) return;
          if (err && !(err instanceof Error && err.name === "AbortError")) onError(err);
          else open();
        })
        .then((controller) => {
          this.watches.add(controller);
          stop.addEventListener("abort", () => {
            controller.abort();
            this.watches.delete(controller);
          });
        }, onError);
    };
    open();
  }

  /** After a delete: waits (watching) until the pod is gone, up to its grace period and half a minute. */
  async waitUntilGone(core: CoreV1Api, env: KubernetesEnvironment): Promise<void> {
    const stopped = new AbortController();
    const limitMs = (this.options.removeGraceSeconds + 30) * 1000;
    let timer: NodeJS.Timeout | undefined;
    let forced = false;
    try {
      const gone = await new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), limitMs);
        this.watchUntil(
          `/api/v1/namespaces/${env.namespace}/pods`,
          { fieldSelector: `metadata.name=${env.pod}` },
          (type, pod: V1Pod) => {
            if (type === "DELETED") resolve(true);
            else if (!forced && !anyContainerRunning(pod)) {
              // Once nothing runs, the kubelet still takes several seconds to
              // release the object; nothing is left to stop, so drop it now.
              forced = true;
              core
                .deleteNamespacedPod({ name: env.pod, namespace: env.namespace, gracePeriodSeconds: 0 })
                .catch((err: unknown) => {
                  if (isNotFound(err)) resolve(true);
                });
            }
          },
          stopped.signal,
          () => resolve(false),
        );
        // The pod may have gone before the watch opened.
        core.readNamespacedPod({ name: env.pod, namespace: env.namespace }).catch((err: unknown) => {
          if (isNotFound(err)) resolve(true);
        });
      });
      if (!gone) {
        this.logger.warn(
          { pod: env.pod, namespace: env.namespace },
          `pod still terminating ${limitMs / 1000} s after its deletion; Kubernetes will finish it`,
        );
      }
    } finally {
      clearTimeout(timer);
      stopped.abort();
    }
  }

  stopAll(): void {
    for (const watch of this.watches) watch.abort();
    this.watches.clear();
  }
}

function lastWarning(events: CoreV1Event[], container?: string): string {
  const warnings = events.filter(
    (e) =>
      e.type === "Warning" && (!container || (e.involvedObject.fieldPath ?? "").includes(`{${container}}`)),
  );
  const last = warnings.at(-1);
  return last ? `; last event: ${eventLine(last)}` : "";
}

/** Whether the kubelet still reports a running container of the pod. */
function anyContainerRunning(pod: V1Pod): boolean {
  const statuses = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
  return statuses.some((container) => container.state?.running !== undefined);
}
