import type { FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { type Header, type Pack, pack } from "tar-stream";
import type { Directory } from "./directory.js";

type EntryHeader = Partial<Header> & Pick<Header, "name">;

/** Bytes read from a file at a time. */
const readBytes = 1024 * 1024;

/** The reader of the archive went away: stop quietly. */
class ReaderGone extends Error {}

/**
 * A tar stream of NAME in `parent` (a file, symlink or directory tree), its
 * entries named under `entryName` as `docker cp` names them. Every lookup
 * goes through open directories (directory.ts), so a tree a job changes
 * while it is read never leads outside it. A file is read up to the size it
 * had when it was opened: one still growing (a live log) gives what was
 * there, one that shrank is filled up with zeros, and a FIFO, socket or
 * device is skipped, as `docker cp` skips them. Files are streamed one at a
 * time, hard links once as data and then as links. `parent` belongs to the
 * stream: it is closed when the stream ends, fails or is destroyed.
 */
export function packEntry(parent: Directory, name: string, entryName: string, logger: Logger): Readable {
  const archive = pack();
  const packer = new TreePacker(archive, logger);
  void packer
    .addTree(parent, name, entryName)
    .then(
      () => archive.finalize(),
      (err: unknown) => {
        if (!(err instanceof ReaderGone)) archive.destroy(err as Error);
      },
    )
    .finally(() => parent.close().catch(() => undefined));
  return archive as unknown as Readable;
}

class TreePacker {
  private readonly firstNameOfInode = new Map<string, string>();

  constructor(
    private readonly archive: Pack,
    private readonly logger: Logger,
  ) {}

  async addTree(dir: Directory, child: string, entry: string): Promise<void> {
    if (this.archive.destroyed) throw new ReaderGone();
    const stat = await dir.entry(child);
    if (!stat) return;
    const header: EntryHeader = {
      name: entry,
      mode: stat.mode & 0o7777,
      uid: stat.uid,
      gid: stat.gid,
      mtime: stat.mtime,
    };
    if (stat.isSymbolicLink()) {
      await this.add({ ...header, type: "symlink", linkname: await dir.readlink(child) });
    } else if (stat.isFile()) {
      await this.addFile(dir, child, header);
    } else if (stat.isDirectory()) {
      const sub = await dir.child(child);
      try {
        await this.add({ ...header, type: "directory" });
        for (const name of await sub.names()) await this.addTree(sub, name, `${entry}/${name}`);
      } finally {
        await sub.close();
      }
    }
    // Sockets, FIFOs and devices have no place in a copy; they are skipped as `docker cp` does.
  }

  private async addFile(dir: Directory, child: string, header: EntryHeader): Promise<void> {
    const opened = await dir.openFile(child);
    // Replaced by something else between the listing and the open: left out, as it is no file now.
    if ("refused" in opened) return;
    const { handle, stat } = opened;
    try {
      const inode = `${stat.dev}:${stat.ino}`;
      const firstName = stat.nlink > 1 ? this.firstNameOfInode.get(inode) : undefined;
      if (firstName !== undefined) {
        await this.add({ ...header, type: "link", linkname: firstName });
        return;
      }
      if (stat.nlink > 1) this.firstNameOfInode.set(inode, header.name);
      await this.addContent(
        { ...header, mode: stat.mode & 0o7777, type: "file", size: stat.size },
        handle,
        child,
        dir,
      );
    } finally {
      await handle.close();
    }
  }

  /** A file entry of `header.size` bytes from the handle, with backpressure from the archive's reader. */
  private async addContent(
    header: EntryHeader,
    handle: FileHandle,
    child: string,
    dir: Directory,
  ): Promise<void> {
    const size = header.size ?? 0;
    let failed: Error | undefined;
    const written = this.untilGone((resolve) => {
      const entry = this.archive.entry(header, (err) => {
        failed = err ?? undefined;
        resolve();
      });
      // Destroying the archive (its reader went away) destroys the entry with an error too: seen here.
      entry.on("error", (err: Error) => (failed ??= err));
      void (async () => {
        let position = 0;
        while (position < size && !this.archive.destroyed) {
          const buffer = Buffer.allocUnsafe(Math.min(readBytes, size - position));
          const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
          if (bytesRead === 0) break;
          position += bytesRead;
          if (!entry.write(buffer.subarray(0, bytesRead))) await drained(entry);
        }
        // The file shrank while it was read: what is missing is zeros, so the archive stays whole.
        if (position < size && !this.archive.destroyed) {
          this.logger.warn(
            { file: dir.shownPath(child), bytesMissing: size - position },
            "a file shrank while it was copied out",
          );
          entry.write(Buffer.alloc(size - position));
        }
        entry.end(undefined);
      })().catch((err: unknown) => {
        failed = err as Error;
        entry.destroy(err as Error);
        resolve();
      });
    });
    await written;
    if (this.archive.destroyed) throw new ReaderGone();
    if (failed) throw failed;
  }

  private async add(header: EntryHeader): Promise<void> {
    let failed: Error | undefined;
    await this.untilGone((resolve) =>
      this.archive.entry(header, (err) => {
        failed = err ?? undefined;
        resolve();
      }),
    );
    if (this.archive.destroyed) throw new ReaderGone();
    if (failed) throw failed;
  }

  /** A promise that `start` resolves, or that resolves anyway when the archive is destroyed. */
  private untilGone(start: (resolve: () => void) => void): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        this.archive.off("close", done);
        resolve();
      };
      this.archive.once("close", done);
      start(done);
    });
  }
}

/** Resolves when the writable can take more, or is gone. */
function drained(stream: { once(event: "drain" | "close", listener: () => void): unknown }): Promise<void> {
  return new Promise((resolve) => {
    stream.once("drain", resolve);
    stream.once("close", resolve);
  });
}
