import { z } from "zod";

/** A list option: an array in the config file, or comma-separated on the command line. */
export const listOption = z.preprocess(
  (value) =>
    typeof value === "string"
      ? value
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean)
      : value,
  z.array(z.string()),
);

/** A boolean option that also accepts "true"/"false" from the command line. */
export const booleanOption = z.preprocess(
  (value) => (value === "true" ? true : value === "false" ? false : value),
  z.boolean(),
);

/** How long a cancelled command gets between SIGTERM and SIGKILL: one option, the same on every driver. */
export const killGraceOption = z.coerce.number().int().min(0).max(600_000).default(2000);
