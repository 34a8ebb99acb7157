import { z } from "zod";
import { type SavedState, layoutSchema } from "../../src/driver.js";

/** What the host driver keeps of an environment (berth's state file holds it across restarts). */
const hostStateSchema = z.object({
  /** Everything of the environment, removed at Remove (records of berth 0.1 have none: dir then). */
  top: z.string().min(1).optional(),
  /** The environment's root (its layout's root_path, to its commands). */
  dir: z.string().min(1),
  /** Where its private directories (options.privateDirs) really are, under bubblewrap. */
  privateDir: z.string().min(1).optional(),
  layout: layoutSchema,
  env: z.record(z.string(), z.string()),
  workingDir: z.string(),
});

export type HostEnvironment = z.infer<typeof hostStateSchema>;

export const hostSavedState: SavedState<HostEnvironment> = { version: 1, schema: hostStateSchema };
