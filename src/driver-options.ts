import { z } from "zod";
import { invalidArgument } from "./errors.js";

/**
 * Validates a driver's options with its schema. Options come from the config
 * file (typed values) or from `--backend-opt KEY=VALUE` (strings), so schemas
 * coerce strings; errors name the driver, the option and what is expected.
 */
export function parseDriverOptions<S extends z.ZodObject>(
  driver: string,
  schema: S,
  raw: Record<string, unknown>,
): z.infer<S> {
  const result = schema.strict().safeParse(raw);
  if (result.success) return result.data as z.infer<S>;
  const known = Object.keys(schema.shape).join(", ");
  const problems = result.error.issues.map((issue) => {
    if (issue.code === "unrecognized_keys") {
      return `unknown option ${issue.keys.map((k) => `"${k}"`).join(", ")} (known options: ${known})`;
    }
    const key = issue.path.join(".");
    return `option "${key}": ${issue.message}`;
  });
  throw invalidArgument(`driver ${driver}: ${problems.join("; ")}`);
}

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
