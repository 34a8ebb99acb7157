import { lstat, mkdir, realpath } from "node:fs/promises";
import { dirname, join, posix, relative, sep } from "node:path";
import { invalidArgument, messageOf, permissionDenied } from "../../src/errors.js";

/** True if `path` is `root` or below it (both absolute and normalised). */
export function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !rel.startsWith(sep));
}

/**
 * Maps a path as the environment's commands see it (under `layoutRoot`) to the
 * real path under `envDir`; anything outside the environment is refused.
 */
export function toRealPath(layoutRoot: string, envDir: string, path: string, field: string): string {
  const normalised = posix.normalize(path);
  if (!isInside(layoutRoot, normalised)) {
    throw invalidArgument(`${field} ${path} is outside the environment; paths must be under ${layoutRoot}`);
  }
  return join(envDir, relative(layoutRoot, normalised));
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
