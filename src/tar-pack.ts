import { createReadStream } from "node:fs";
import { lstat, opendir, readlink } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { pack, type Header } from "tar-stream";

type EntryHeader = Partial<Header> & Pick<Header, "name">;

/**
 * A tar stream of a file or directory tree on this machine, entries named
 * under `entryName` (as `docker cp` names them: the base name of the path).
 * Files are streamed one at a time, so memory stays bounded; symlinks are
 * stored as links, hard links once as data and then as links.
 */
export function packTree(rootPath: string, entryName: string): Readable {
  const archive = pack();
  void (async () => {
    const firstNameOfInode = new Map<string, string>();
    const pending: { path: string; name: string }[] = [{ path: rootPath, name: entryName }];
    while (pending.length > 0) {
      const { path, name } = pending.pop()!;
      const stat = await lstat(path);
      const header: EntryHeader = {
        name,
        mode: stat.mode & 0o7777,
        uid: stat.uid,
        gid: stat.gid,
        mtime: stat.mtime,
      };
      if (stat.isDirectory()) {
        await addEntry(archive, { ...header, type: "directory" });
        const children: string[] = [];
        for await (const dirent of await opendir(path)) children.push(dirent.name);
        // Reverse-sorted onto the stack, so entries come out in name order.
        children.sort().reverse();
        for (const child of children) pending.push({ path: join(path, child), name: `${name}/${child}` });
      } else if (stat.isSymbolicLink()) {
        await addEntry(archive, { ...header, type: "symlink", linkname: await readlink(path) });
      } else if (stat.isFile()) {
        const inode = `${stat.dev}:${stat.ino}`;
        const firstName = stat.nlink > 1 ? firstNameOfInode.get(inode) : undefined;
        if (firstName !== undefined) {
          await addEntry(archive, { ...header, type: "link", linkname: firstName });
          continue;
        }
        if (stat.nlink > 1) firstNameOfInode.set(inode, name);
        const entry = archive.entry({ ...header, type: "file", size: stat.size });
        await pipeline(createReadStream(path), entry);
      }
      // Sockets, fifos and devices have no place in a copy; they are skipped as `docker cp` does.
    }
    archive.finalize();
  })().catch((err: unknown) => archive.destroy(err as Error));
  return archive as unknown as Readable;
}

function addEntry(archive: ReturnType<typeof pack>, header: EntryHeader): Promise<void> {
  return new Promise((resolve, reject) => archive.entry(header, (err) => (err ? reject(err) : resolve())));
}
