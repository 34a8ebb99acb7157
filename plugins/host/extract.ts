import type { FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract, type Header } from "tar-stream";
import { Directory, fileError } from "./directory.js";

/** Setuid/setgid bits are dropped: a copy must not hand out privileges. */
const modeMask = 0o1777;

/** Open directories kept while extracting, by path below the destination; the rest are reopened. */
const cachedDirectories = 64;

/**
 * Extracts a tar stream (already checked by the core: no entry escapes the
 * destination) into `dest`. Every entry is written through open
 * directories (directory.ts): a directory a job swaps for a symlink while
 * the copy runs is refused, never followed, and modes and times are set on
 * descriptors, so nothing outside the environment is ever created, changed
 * or chmod'ed.
 */
export async function extractTar(tar: Readable, dest: Directory): Promise<void> {
  const directories = new DirectoryCache(dest);
  const modes = new DeferredModes(directories);
  const finishing = new Finishing();
  const parser = extract();

  const writeEntry = async (header: Header, body: Readable) => {
    const components = header.name.split("/").filter((part) => part !== "" && part !== ".");
    await modes.applyOutside(components);
    const name = components.pop();
    if (name === undefined) {
      // The destination itself ("./"): only its mode and time.
      modes.push({ path: [], header });
      body.resume();
      return;
    }
    const parent = await directories.get(components);
    const mode = (header.mode ?? 0o644) & modeMask;
    switch (header.type) {
      case "directory": {
        const existing = await parent.entry(name);
        if (existing && !existing.isDirectory()) await parent.clear(name);
        await directories.get([...components, name]);
        // Modes and times of directories are set at the end, or a read-only one would block its own content.
        modes.push({ path: [...components, name], header });
        body.resume();
        return;
      }
      case "symlink":
        await parent.clear(name);
        await parent.symlink(header.linkname ?? "", name, header.mtime);
        body.resume();
        return;
      case "link": {
        const sourcePath = (header.linkname ?? "").split("/").filter((part) => part !== "" && part !== ".");
        const sourceName = sourcePath.pop() ?? "";
        const sourceParent = await directories.get(sourcePath, false);
        await parent.clear(name);
        await parent.link(sourceParent, sourceName, name);
        body.resume();
        return;
      }
      default: {
        const handle = await parent.replaceFile(name, mode);
        try {
          await writeBody(handle, body as AsyncIterable<Buffer>);
        } catch (err) {
          await handle.close();
          throw fileError(err, `write ${parent.shownPath(name)}`);
        }
        await finishing.add(async () => {
          try {
            await handle.chmod(mode);
            if (header.mtime) await handle.utimes(header.mtime, header.mtime);
          } catch (err) {
            throw fileError(err, `write ${parent.shownPath(name)}`);
          } finally {
            await handle.close();
          }
        });
      }
    }
  };

  // The entry's own failure is the answer. It can come after the pipeline's: an entry's body
  // that a failed write stops reading destroys the parser, which the pipeline sees as an early close.
  let entryFailure: unknown;
  let writing: Promise<void> = Promise.resolve();
  parser.on("entry", (header, body, next) => {
    writing = writeEntry(header, body as unknown as Readable).then(
      () => next(),
      (err: unknown) => {
        entryFailure ??= err;
        body.resume();
        next(err as Error);
      },
    );
  });
  try {
    await pipeline(tar, parser).catch(async (err: unknown) => {
      await writing;
      throw entryFailure ?? err;
    });
    await finishing.done();
    await modes.applyOutside(undefined);
  } finally {
    await finishing.settled();
    await directories.closeAll();
  }
}

/** Files whose mode, time and close may be under way at once. */
const finishingAtOnce = 16;

/**
 * The last steps of written files (fchmod, futimens, close), done while
 * the next entries are extracted: each is a round trip through libuv's
 * thread pool, and a copy of many small files spent most of its time
 * waiting for them one after the other. They work on the file's open
 * descriptor, so nothing an entry after it does (replacing it, linking to
 * it, setting its directory's mode) depends on them. `done` waits for all
 * and throws the first failure; `settled` only waits (on the way out).
 */
class Finishing {
  private readonly running = new Set<Promise<void>>();
  private failure: { err: unknown } | undefined;

  async add(step: () => Promise<void>): Promise<void> {
    while (this.running.size >= finishingAtOnce) await Promise.race(this.running);
    if (this.failure) throw this.failure.err;
    const running: Promise<void> = step().then(
      () => void this.running.delete(running),
      (err: unknown) => {
        this.failure ??= { err };
        this.running.delete(running);
      },
    );
    this.running.add(running);
  }

  async done(): Promise<void> {
    await this.settled();
    if (this.failure) throw this.failure.err;
  }

  async settled(): Promise<void> {
    await Promise.all(this.running);
  }
}

/** A file's content is written in batches of about this many bytes, one writev each. */
const writeBatchBytes = 1024 * 1024;

/**
 * Writes a file's content as it comes. Each write is a round trip through
 * libuv's thread pool, so writing every 256 KiB message on its own, one
 * after the other, left the copy waiting on those round trips: the chunks
 * that arrive while one write runs are gathered and written with the next
 * writev (no copy). At most one batch waits and one is written, so memory
 * stays bounded and the stream is held back by its own backpressure.
 */
async function writeBody(handle: FileHandle, body: AsyncIterable<Buffer>): Promise<void> {
  let batch: Buffer[] = [];
  let batchBytes = 0;
  // A write fails while the next chunks are awaited (a full disk): its failure is kept, never left
  // unhandled (which would end the daemon), and thrown once the loop looks at it.
  let failure: { err: unknown } | undefined;
  let writing: Promise<void> = Promise.resolve();
  const written = async () => {
    await writing;
    if (failure) throw failure.err;
  };
  for await (const chunk of body) {
    batch.push(chunk);
    batchBytes += chunk.length;
    if (batchBytes < writeBatchBytes) continue;
    await written();
    writing = writeFully(handle, batch).catch((err: unknown) => void (failure ??= { err }));
    batch = [];
    batchBytes = 0;
  }
  await written();
  if (batch.length > 0) await writeFully(handle, batch);
}

/** writev until every byte is written (a short write is rare on a file, but possible). */
async function writeFully(handle: FileHandle, buffers: Buffer[]): Promise<void> {
  let rest = buffers;
  while (rest.length > 0) {
    let { bytesWritten } = await handle.writev(rest);
    while (rest.length > 0 && bytesWritten >= rest[0].length) {
      bytesWritten -= rest[0].length;
      rest = rest.slice(1);
    }
    if (bytesWritten > 0) rest = [rest[0].subarray(bytesWritten), ...rest.slice(1)];
  }
}

/**
 * Modes and times of directories, set once nothing more goes into them (a
 * read-only one would block its own content, and each new entry changes a
 * directory's mtime). Archives come in tree order, so as GNU tar does, a
 * directory is done when an entry comes that is not below it: the ones
 * waiting are only the ancestors of the current entry, not every directory
 * of the archive (300,000 of them would hold hundreds of MiB).
 */
class DeferredModes {
  private readonly waiting: { path: string[]; mode: number; mtime?: Date }[] = [];

  constructor(private readonly directories: DirectoryCache) {}

  push({ path, header }: { path: string[]; header: Header }): void {
    this.waiting.push({ path, mode: (header.mode ?? 0o755) & modeMask, mtime: header.mtime });
  }

  /** Sets those not above the entry at `components`; all of them at the end (undefined). */
  async applyOutside(components: readonly string[] | undefined): Promise<void> {
    while (this.waiting.length > 0) {
      const { path, mode, mtime } = this.waiting.at(-1)!;
      const above =
        components !== undefined &&
        path.length < components.length &&
        path.every((part, i) => components[i] === part);
      if (above) return;
      this.waiting.pop();
      await (await this.directories.get(path)).setModeAndTime(mode, mtime);
    }
  }
}

/**
 * The open directories below the destination, by path: a few kept open for
 * the entries that come next (archives come directory by directory), the
 * others closed and walked to again when needed.
 */
class DirectoryCache {
  private readonly open = new Map<string, Directory>();

  constructor(private readonly dest: Directory) {}

  async get(components: readonly string[], create = true): Promise<Directory> {
    if (components.length === 0) return this.dest;
    const key = components.join("/");
    const cached = this.open.get(key);
    if (cached) {
      // Most recently used last.
      this.open.delete(key);
      this.open.set(key, cached);
      return cached;
    }
    const parent = await this.get(components.slice(0, -1), create);
    const dir = await parent.child(components.at(-1)!, create);
    this.open.set(key, dir);
    if (this.open.size > cachedDirectories) {
      const [oldestKey, oldest] = this.open.entries().next().value!;
      this.open.delete(oldestKey);
      await oldest.close();
    }
    return dir;
  }

  async closeAll(): Promise<void> {
    for (const dir of this.open.values()) await dir.close();
    this.open.clear();
  }
}
