import { join, posix, relative, sep } from "node:path";

/** True if `path` is `root` or below it (both absolute and normalised). */
export function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !rel.startsWith(sep));
}

/** A directory as the environment's commands see it, and where it really is. */
export interface PathMapping {
  seen: string;
  real: string;
}

/**
 * Maps a path as the environment's commands see it to its real path, through
 * the mapping of the deepest directory that holds it; undefined when none does.
 */
export function mapPath(mappings: readonly PathMapping[], path: string): string | undefined {
  const normalised = posix.normalize(path);
  let best: PathMapping | undefined;
  for (const mapping of mappings) {
    if (isInside(mapping.seen, normalised) && (!best || mapping.seen.length > best.seen.length))
      best = mapping;
  }
  return best && join(best.real, relative(best.seen, normalised));
}
