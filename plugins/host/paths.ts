import { lstat, mkdir, realpath } from "node:fs/promises";
import { dirname, join, posix, relative, sep } from "node:path";
import { invalidArgument, messageOf, permissionDenied } from "../../src/errors.js";

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

/**
 * Refuses a real path whose parent directory resolves (through symlinks a
 * command may have made) to somewhere outside `envDir`. The last component is
 * not followed, so a symlink itself can still be copied out or replaced.
 */
export async function assertContained(envDir: string, realPath: string): Promise<void> {
  const envReal = await realpath(envDir);
  let ancestor = dirname(realPath);
  for (;;) {
    try {
      const resolved = await realpath(ancestor);
      if (!isInside(envReal, resolved)) {
        throw permissionDenied(
          `${realPath} resolves through a symlink to ${resolved}, outside the environment`,
        );
      }
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      if (ancestor === envDir || ancestor === dirname(ancestor)) return;
      ancestor = dirname(ancestor);
    }
  }
}

/** mkdir -p that refuses to create anything through a symlink leading outside envDir. */
export async function makeContainedDir(envDir: string, dir: string): Promise<void> {
  await assertContained(envDir, join(dir, "x"));
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    const stat = await lstat(dir).catch(() => undefined);
    if (stat && !stat.isDirectory()) throw invalidArgument(`${dir} exists and is not a directory`);
    throw new Error(`cannot create directory ${dir}: ${messageOf(err)}`, { cause: err });
  }
}
