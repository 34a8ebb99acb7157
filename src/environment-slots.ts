/**
 * How many environments each backend holds, against its
 * limits.maxEnvironments. The runner never retries a Create, so a Create at
 * the limit waits for an environment to be removed (first come, first
 * served), up to limits.createWaitSeconds and the call's own deadline, and
 * only then fails with RESOURCE_EXHAUSTED.
 */
import type { Logger } from "pino";
import type { Backend } from "./environments.js";
import { BerthError, Status } from "./errors.js";
import type { Metrics } from "./metrics.js";

export class EnvironmentSlots {
  private readonly counts = new Map<Backend, number>();
  /** Creates waiting for a slot, per backend, oldest first; calling one hands it a slot. */
  private readonly waiting = new Map<Backend, (() => void)[]>();

  constructor(private readonly metrics: Metrics) {}

  /** Environments of a backend now, counting those being created. */
  count(backend: Backend): number {
    return this.counts.get(backend) ?? 0;
  }

  /** Counts an environment that needs no slot check (one taken up after a restart). */
  add(backend: Backend): void {
    this.counts.set(backend, this.count(backend) + 1);
  }

  /** Takes a slot for a new environment, waiting while the backend is at its limit. */
  async take(backend: Backend, signal: AbortSignal, log: Logger): Promise<void> {
    const { maxEnvironments, createWaitMs } = backend.limits;
    const queue = this.waiting.get(backend) ?? [];
    if (maxEnvironments === undefined || (this.count(backend) < maxEnvironments && queue.length === 0)) {
      this.add(backend);
      return;
    }
    signal.throwIfAborted();
    const full = `backend ${backend.name} already has ${this.count(backend)} environments, its limit (limits.maxEnvironments = ${maxEnvironments})`;
    if (createWaitMs === 0) {
      throw new BerthError(Status.RESOURCE_EXHAUSTED, `${full}; retry when a job has finished`);
    }
    log.info(
      { maxEnvironments, waitSeconds: createWaitMs / 1000, waiting: queue.length + 1 },
      "backend is at its limit of environments: this Create waits for one to be removed",
    );
    this.metrics.createsWaiting.inc({ backend: backend.name });
    const started = performance.now();
    try {
      await this.wait(backend, queue, signal, createWaitMs, full);
    } finally {
      this.metrics.createsWaiting.dec({ backend: backend.name });
      this.metrics.createWaitSeconds.observe({ backend: backend.name }, (performance.now() - started) / 1000);
    }
  }

  /** Gives a slot back: the longest-waiting Create gets it, else the count goes down. */
  release(backend: Backend): void {
    const next = this.waiting.get(backend)?.shift();
    if (next) next();
    else this.counts.set(backend, Math.max(0, this.count(backend) - 1));
  }

  private wait(
    backend: Backend,
    queue: (() => void)[],
    signal: AbortSignal,
    waitMs: number,
    full: string,
  ): Promise<void> {
    this.waiting.set(backend, queue);
    return new Promise<void>((resolve, reject) => {
      const leave = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        const at = queue.indexOf(handOver);
        if (at >= 0) queue.splice(at, 1);
      };
      const handOver = () => {
        leave();
        resolve();
      };
      const onAbort = () => {
        leave();
        reject(signal.reason as Error);
      };
      const timer = setTimeout(() => {
        leave();
        reject(
          new BerthError(
            Status.RESOURCE_EXHAUSTED,
            `${full}, and none was removed within ${waitMs / 1000} s (limits.createWaitSeconds); the runner does not retry Create, so this job fails`,
          ),
        );
      }, waitMs);
      signal.addEventListener("abort", onAbort, { once: true });
      queue.push(handOver);
    });
  }
}
