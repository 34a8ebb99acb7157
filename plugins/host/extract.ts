import { constants, createWriteStream } from "node:fs";
import { chmod, link, lstat, mkdir, open, rm, symlink, unlink, utimes, lutimes } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract, type Header } from "tar-stream";
import { invalidArgument } from "../../src/errors.js";
import { assertContained, makeContainedDir } from "./paths.js";

/** Setuid/setgid bits are dropped: a copy must not hand out privileges. */
const modeMask = 0o1777;

/**
 * Extracts a tar stream (already checked by the core: no entry escapes the
 * destination) into destDir. As a second line of defence it never writes
 * through a symlink that leads outside envDir, whoever made it.
 */
export async function extractTar(tar: Readable, destDir: string, envDir: string): Promise<void> {
  await makeContainedDir(envDir, destDir);
  const verifiedDirs = new Set<string>([destDir]);
  const directories: { path: string; header: Header }[] = [];
  const parser = extract();

  const ensureParent = async (path: string) => {
    const parent = dirname(path);
    if (verifiedDirs.has(parent)) return;
    await makeContainedDir(envDir, parent);
    verifiedDirs.add(parent);
  };

  const writeEntry = async (header: Header, body: Readable) => {
    const name = header.name.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
    const target = name === "" || name === "." ? destDir : join(destDir, name);
    if (target !== destDir) await ensureParent(target);
    const mode = (header.mode ?? 0o644) & modeMask;
    switch (header.type) {
      case "directory": {
        const existing = await lstat(target).catch(() => undefined);
        if (existing && !existing.isDirectory()) await rm(target, { force: true });
        await mkdir(target, { recursive: true });
        verifiedDirs.add(target);
        // Modes and times of directories are set at the end, or a read-only one would block its own content.
        directories.push({ path: target, header });
        body.resume();
        return;
      }
      case "symlink":
        await replaceable(target);
        await symlink(header.linkname ?? "", target);
        if (header.mtime) await lutimes(target, header.mtime, header.mtime);
        body.resume();
        return;
      case "link": {
        const source = join(destDir, (header.linkname ?? "").replace(/^(\.\/)+/, ""));
        await assertContained(envDir, source);
        await replaceable(target);
        await link(source, target);
        body.resume();
        return;
      }
      default: {
        await replaceable(target);
        // O_NOFOLLOW: never write through a symlink that appeared after the check.
        const handle = await open(
          target,
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          mode,
        );
        await pipeline(body, createWriteStream("", { fd: handle }));
        await chmod(target, mode);
        if (header.mtime) await utimes(target, header.mtime, header.mtime);
      }
    }
  };

  parser.on("entry", (header, body, next) => {
    writeEntry(header, body as unknown as Readable).then(
      () => next(),
      (err: unknown) => {
        body.resume();
        next(err as Error);
      },
    );
  });
  await pipeline(tar, parser);
  for (const { path, header } of directories.reverse()) {
    await chmod(path, (header.mode ?? 0o755) & modeMask);
    if (header.mtime) await utimes(path, header.mtime, header.mtime);
  }
}

/** Makes way for a new entry: like tar, replace a file or link, but never a directory. */
async function replaceable(target: string): Promise<void> {
  const existing = await lstat(target).catch(() => undefined);
  if (!existing) return;
  if (existing.isDirectory())
    throw invalidArgument(`cannot replace directory ${target} with a non-directory entry`);
  await unlink(target);
}
