/**
 * The reconciler: finds what berth's backends hold for this instance (its
 * labels) and removes what no live environment accounts for, once it is older
 * than the grace period (a Create in progress has resources before its
 * record), and live environments older than the configured maximum age.
 */
import type { Logger } from "pino";
import type { ManagedEnvironment } from "./driver.js";
import type { Backend } from "./environments.js";
import { messageOf } from "./errors.js";

export interface ReconcileOptions {
  backends: Iterable<Backend>;
  /** Whether an environment id has a live record. */
  isLive: (id: string) => boolean;
  /** Removes a live environment (through the core, so its record goes too). */
  removeLive: (found: ManagedEnvironment, backend: Backend) => Promise<void>;
  orphanGraceMs: number;
  maxAgeMs?: number;
  /** Say what would go, remove nothing. */
  dryRun?: boolean;
  logger: Logger;
  now?: Date;
}

export interface Removal {
  backend: string;
  id: string;
  reason: "orphan" | "too old";
  createdAt?: Date;
  /** Why the removal failed, if it did. */
  error?: string;
}

/** One pass over every backend; a backend that cannot be listed is logged and skipped. */
export async function reconcile(options: ReconcileOptions): Promise<Removal[]> {
  const now = (options.now ?? new Date()).getTime();
  const removals: Removal[] = [];
  for (const backend of options.backends) {
    let managed;
    try {
      managed = await backend.driver.listManaged();
    } catch (err) {
      options.logger.warn(
        { backend: backend.name, err: messageOf(err) },
        "reconciler: cannot list the backend's environments",
      );
      continue;
    }
    for (const found of managed) {
      // Unknown creation time: old enough.
      const age = found.createdAt ? now - found.createdAt.getTime() : Number.POSITIVE_INFINITY;
      const live = options.isLive(found.id);
      const reason =
        !live && age >= options.orphanGraceMs
          ? "orphan"
          : live && options.maxAgeMs !== undefined && age > options.maxAgeMs
            ? "too old"
            : undefined;
      if (!reason) continue;
      const removal: Removal = { backend: backend.name, id: found.id, reason, createdAt: found.createdAt };
      if (!options.dryRun) {
        try {
          if (live) await options.removeLive(found, backend);
          else await backend.driver.remove({ id: found.id, state: found.state });
          options.logger.info(
            { backend: backend.name, environmentId: found.id, reason },
            "reconciler removed an environment",
          );
        } catch (err) {
          removal.error = messageOf(err);
          options.logger.warn(
            { backend: backend.name, environmentId: found.id, reason, err: removal.error },
            "reconciler could not remove an environment",
          );
        }
      }
      removals.push(removal);
    }
  }
  return removals;
}
