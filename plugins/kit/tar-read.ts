import type { Readable } from "node:stream";
import { extract } from "tar-stream";
import { BerthError, Status } from "../../src/errors.js";

/**
 * The content of the first regular file in a tar stream, up to maxBytes
 * (drivers read single files, e.g. env files, through their CopyOut path).
 * Undefined if the archive holds no regular file.
 */
export async function firstFileFromTar(tar: Readable, maxBytes: number): Promise<Buffer | undefined> {
  const parser = extract();
  tar.pipe(parser);
  tar.on("error", (err) => parser.destroy(err));
  try {
    for await (const entry of parser) {
      if (entry.header.type !== "file") {
        entry.resume();
        continue;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of entry as AsyncIterable<Buffer>) {
        if (size < maxBytes) chunks.push(chunk.subarray(0, maxBytes - size));
        size += chunk.length;
      }
      return Buffer.concat(chunks);
    }
    return undefined;
  } finally {
    tar.destroy();
  }
}

/**
 * A driver's readFile through its own CopyOut: the file's first maxBytes,
 * or undefined when the path does not exist (CopyOut's NOT_FOUND).
 */
export async function readFileThroughCopyOut(
  copyOut: () => Promise<Readable>,
  maxBytes: number,
): Promise<Buffer | undefined> {
  try {
    return await firstFileFromTar(await copyOut(), maxBytes);
  } catch (err) {
    if (err instanceof BerthError && err.code === Status.NOT_FOUND) return undefined;
    throw err;
  }
}
