import { z } from "zod";
import type { SavedState } from "../../src/driver.js";

/** What the Kubernetes driver keeps of an environment (berth's state file holds it across restarts). */
const kubernetesStateSchema = z.object({
  namespace: z.string().min(1),
  pod: z.string().min(1),
  /** Service names that are no host names as written; Start adds them to the job's /etc/hosts. */
  extraHosts: z.array(z.string()).optional(),
});

export type KubernetesEnvironment = z.infer<typeof kubernetesStateSchema>;

export const kubernetesSavedState: SavedState<KubernetesEnvironment> = {
  version: 1,
  schema: kubernetesStateSchema,
};
