import { z } from "zod";
import type { SavedState } from "../../src/driver.js";

/** What the Docker driver keeps of an environment (berth's state file holds it across restarts). */
const dockerStateSchema = z.object({
  containerId: z.string().min(1),
  /** The environment's own network; absent when the job asked for another network mode. */
  network: z.string().min(1).optional(),
  serviceIds: z.array(z.object({ name: z.string(), id: z.string().min(1) })),
  imageEnv: z.record(z.string(), z.string()),
  /** The job container's default user (the image's USER); empty: root. */
  user: z.string().optional(),
});

export type DockerEnvironment = z.infer<typeof dockerStateSchema>;

export const dockerSavedState: SavedState<DockerEnvironment> = { version: 1, schema: dockerStateSchema };
