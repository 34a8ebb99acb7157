import { tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { booleanOption, killGraceOption, listOption } from "../kit/driver-options.js";

export const hostOptionsSchema = z.object({
  /** Where environment directories live. */
  root: z.string().min(1).default(join(tmpdir(), "berth-host")),
  /**
   * bwrap: every command runs in a private mount namespace where the
   * environment's directory appears at one fixed path (needed for plugin.v1's
   * global layout). none: commands see the real directories (plugin.v1alpha
   * only). auto: bwrap if it works here, else none.
   */
  isolation: z.enum(["auto", "bwrap", "none"]).default("auto"),
  /**
   * Directories each environment has a private copy of (with bubblewrap):
   * the runner runs a job in /<container.workdir_parent>/<owner>/<repo>, by
   * default under /workspace, outside the environment's root.
   */
  privateDirs: listOption
    .pipe(
      z.array(
        z
          .string()
          .regex(/^\/[^\0]*[^/]$/, "an absolute directory path, e.g. /workspace")
          .refine((path) => !path.split("/").includes(".."), "without .. components"),
      ),
    )
    .default(["/workspace"]),
  /** Directories CopyLocal may copy from; empty disables CopyLocal. */
  allowedLocalRoots: listOption.default([]),
  /** Let commands keep berth's capabilities (root's, if berth runs as root) under bubblewrap; off: all dropped. */
  keepCapabilities: booleanOption.default(false),
  /** How long a cancelled command gets between SIGTERM and SIGKILL. */
  killGraceMs: killGraceOption,
});

export type HostOptions = z.infer<typeof hostOptionsSchema>;
