/**
 * Race-free file access inside an environment. A job's processes can swap a
 * directory for a symlink (to /etc, say) at any moment, so a path checked
 * and then used is no protection. Here a directory is opened once, and every
 * later name is looked up *inside that open directory* through
 * /proc/self/fd/N/NAME — the kernel resolves N to the directory the
 * descriptor holds, whatever its path has become, and NAME is one component
 * that is never followed if it is a symlink (O_NOFOLLOW, or calls that do not
 * follow the last component). Walking one component at a time from the
 * environment's own directory therefore never leaves it, and modes and times
 * are set on open descriptors (fchmod, futimens), never through a path.
 *
 * Files are opened with O_NONBLOCK and checked with fstat before they are
 * read, so a FIFO (or a device) a job put in place of a file is refused at
 * once instead of blocking one of libuv's few worker threads for good.
 */
import { constants, type Stats } from "node:fs";
import {
  type FileHandle,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  readlink,
  symlink,
  unlink,
} from "node:fs/promises";
import {
  BerthError,
  Status,
  invalidArgument,
  messageOf,
  missingPath,
  permissionDenied,
} from "../../src/errors.js";

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK } = constants;

/** The errno of a failed call, if it has one. */
export function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** A failed file operation as the error a person can act on (no full stack, the path as the job sees it). */
export function fileError(err: unknown, doing: string): BerthError {
  if (err instanceof BerthError) return err;
  switch (errnoOf(err)) {
    case "ENOENT":
      return missingPath(`${doing}: it does not exist in the environment`);
    case "ENOSPC":
    case "EDQUOT":
      return new BerthError(Status.RESOURCE_EXHAUSTED, `${doing}: the disk is full (${errnoOf(err)})`, {
        cause: err,
      });
    case "ENAMETOOLONG":
      return invalidArgument(
        `${doing}: a name is longer than the file system allows (255 bytes a component)`,
      );
    case "ELOOP":
    case "ENOTDIR":
      return permissionDenied(`${doing}: a component is a symlink or not a directory, and is not followed`);
    case "EACCES":
    case "EPERM":
      return permissionDenied(`${doing}: permission denied`);
    default:
      return new BerthError(Status.FAILED_PRECONDITION, `${doing}: ${messageOf(err)}`, { cause: err });
  }
}

/** One path component: no "/", not "." or "..", not empty. */
function assertName(name: string): void {
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    throw invalidArgument(`"${name}" is not a single file name`);
  }
}

export class Directory {
  private constructor(
    private readonly handle: FileHandle,
    /** Where it is, as the environment's commands see it (for messages). */
    readonly shown: string,
  ) {}

  /** Opens a directory berth itself trusts (an environment's own root). */
  static async open(realPath: string, shown: string): Promise<Directory> {
    try {
      return new Directory(await open(realPath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW), shown);
    } catch (err) {
      throw fileError(err, `open ${shown}`);
    }
  }

  /** The kernel's way to NAME inside this open directory, whatever its path is now. */
  at(name: string): string {
    assertName(name);
    return `/proc/self/fd/${this.handle.fd}/${name}`;
  }

  /** The shown path of a name inside it. */
  shownPath(name: string): string {
    return this.shown === "/" ? `/${name}` : `${this.shown}/${name}`;
  }

  /** A subdirectory, made first if `create` and missing; a symlink or file there is refused. */
  async child(name: string, create = false): Promise<Directory> {
    if (create) {
      try {
        await mkdir(this.at(name), 0o755);
      } catch (err) {
        if (errnoOf(err) !== "EEXIST") throw fileError(err, `create ${this.shownPath(name)}`);
      }
    }
    try {
      return new Directory(
        await open(this.at(name), O_RDONLY | O_DIRECTORY | O_NOFOLLOW),
        this.shownPath(name),
      );
    } catch (err) {
      if (errnoOf(err) === "ELOOP" || errnoOf(err) === "ENOTDIR") {
        throw permissionDenied(
          `${this.shownPath(name)} is a symlink or not a directory; berth does not follow symlinks in the paths it is given`,
        );
      }
      throw fileError(err, `open ${this.shownPath(name)}`);
    }
  }

  /** The directory at these components below this one (made as needed if `create`); closes the ones between. */
  async walk(components: readonly string[], create = false): Promise<Directory> {
    let current = await this.reopen();
    for (const name of components) {
      const next = await current.child(name, create).finally(() => current.close());
      current = next;
    }
    return current;
  }

  /** A second descriptor of this directory, to be closed on its own. */
  async reopen(): Promise<Directory> {
    return new Directory(await open(`/proc/self/fd/${this.handle.fd}`, O_RDONLY | O_DIRECTORY), this.shown);
  }

  /** lstat of a name in it (a symlink is not followed); undefined if there is none. */
  async entry(name: string): Promise<Stats | undefined> {
    try {
      return await lstat(this.at(name));
    } catch (err) {
      if (errnoOf(err) === "ENOENT") return undefined;
      throw fileError(err, `look at ${this.shownPath(name)}`);
    }
  }

  /**
   * The names in it, sorted. A name that is not UTF-8 is refused: as a
   * string it would be another name (U+FFFD for the odd bytes), which then
   * is not found, and the copy would leave the entry out without a word.
   */
  async names(): Promise<string[]> {
    const names: string[] = [];
    for (const raw of await readdir(`/proc/self/fd/${this.handle.fd}`, { encoding: "buffer" })) {
      const name = raw.toString("utf8");
      if (!Buffer.from(name).equals(raw)) {
        throw new BerthError(
          Status.FAILED_PRECONDITION,
          `${this.shownPath(name)} has a name that is not valid UTF-8, which a tar stream of this protocol cannot carry; rename it (U+FFFD marks the bytes)`,
        );
      }
      names.push(name);
    }
    return names.sort();
  }

  /**
   * A regular file of it opened for reading, with its fstat, or why it could
   * not be: missing, a symlink, or no regular file (found without blocking).
   */
  async openFile(
    name: string,
  ): Promise<
    { handle: FileHandle; stat: Stats } | { refused: "missing" | "symlink" | "not a regular file" }
  > {
    let handle: FileHandle;
    try {
      handle = await open(this.at(name), O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    } catch (err) {
      if (errnoOf(err) === "ENOENT") return { refused: "missing" };
      if (errnoOf(err) === "ELOOP") return { refused: "symlink" };
      throw fileError(err, `open ${this.shownPath(name)}`);
    }
    const stat = await handle.stat();
    if (stat.isFile()) return { handle, stat };
    await handle.close();
    return { refused: "not a regular file" };
  }

  /** A new file in it, never through a symlink (an existing entry must have been removed first). */
  async createFile(name: string, mode: number): Promise<FileHandle> {
    try {
      return await open(this.at(name), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
    } catch (err) {
      throw fileError(err, `create ${this.shownPath(name)}`);
    }
  }

  /** Creates NAME as a new file, replacing a non-directory there: one call when nothing is (a fresh copy's case). */
  async replaceFile(name: string, mode: number): Promise<FileHandle> {
    try {
      return await open(this.at(name), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
    } catch (err) {
      if (errnoOf(err) !== "EEXIST") throw fileError(err, `create ${this.shownPath(name)}`);
    }
    await this.clear(name);
    return this.createFile(name, mode);
  }

  /** Makes way for a new entry of NAME: a file, symlink or other non-directory there is removed. */
  async clear(name: string): Promise<void> {
    const existing = await this.entry(name);
    if (!existing) return;
    if (existing.isDirectory()) {
      throw invalidArgument(`cannot replace directory ${this.shownPath(name)} with a non-directory entry`);
    }
    await unlink(this.at(name)).catch((err: unknown) => {
      throw fileError(err, `replace ${this.shownPath(name)}`);
    });
  }

  async symlink(target: string, name: string, mtime?: Date): Promise<void> {
    try {
      await symlink(target, this.at(name));
      if (mtime) await lutimes(this.at(name), mtime, mtime);
    } catch (err) {
      throw fileError(err, `create symlink ${this.shownPath(name)}`);
    }
  }

  async readlink(name: string): Promise<string> {
    return readlink(this.at(name));
  }

  /** A hard link NAME to `sourceName` of `source` (a regular file; a symlink there is linked as itself). */
  async link(source: Directory, sourceName: string, name: string): Promise<void> {
    try {
      await link(source.at(sourceName), this.at(name));
    } catch (err) {
      throw fileError(err, `link ${this.shownPath(name)}`);
    }
  }

  /** Mode and times of the directory itself, through its descriptor. */
  async setModeAndTime(mode: number, mtime?: Date): Promise<void> {
    await this.handle.chmod(mode);
    if (mtime) await this.handle.utimes(mtime, mtime);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
