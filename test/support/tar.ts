import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract, pack } from "tar-stream";

export interface TarEntrySpec {
  name: string;
  type?: "file" | "directory" | "symlink" | "link" | "fifo";
  mode?: number;
  content?: string | Buffer;
  linkname?: string;
}

/** A small tar archive in memory (test fixtures only). */
export async function tarOf(entries: TarEntrySpec[]): Promise<Buffer> {
  const archive = pack();
  // Drain while adding: pack() holds entries back until its output is read.
  const collected = (async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of archive as AsyncIterable<Buffer>) chunks.push(chunk);
    return Buffer.concat(chunks);
  })();
  for (const entry of entries) {
    const content = entry.content === undefined ? undefined : Buffer.from(entry.content);
    await new Promise<void>((resolve, reject) =>
      archive.entry(
        {
          name: entry.name,
          type: entry.type ?? "file",
          mode: entry.mode ?? (entry.type === "directory" ? 0o755 : 0o644),
          linkname: entry.linkname,
          size: content?.length ?? 0,
        },
        content ?? Buffer.alloc(0),
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }
  archive.finalize();
  return collected;
}

export async function* once(buffer: Buffer): AsyncGenerator<Buffer> {
  yield buffer;
}

/**
 * A tar stream holding one file of `size` bytes, generated as it is read
 * (never held in memory); `sha256` resolves to the file content's hash.
 */
export function bigFileTar(
  name: string,
  size: number,
): { stream: AsyncIterable<Buffer>; sha256: Promise<string> } {
  const block = randomBytes(1024 * 1024);
  const hash = createHash("sha256");
  const archive = pack();
  const sha256 = new Promise<string>((resolve, reject) => {
    const entry = archive.entry({ name, size, mode: 0o644 }, (err) =>
      err ? reject(err) : resolve(hash.digest("hex")),
    );
    async function* content() {
      for (let sent = 0; sent < size; sent += block.length) {
        const piece = block.subarray(0, Math.min(block.length, size - sent));
        hash.update(piece);
        yield piece;
      }
    }
    Readable.from(content()).pipe(entry);
  });
  void sha256.then(
    () => archive.finalize(),
    () => {},
  );
  return { stream: archive as AsyncIterable<Buffer>, sha256 };
}

/**
 * A tar stream of `count` empty directories d/0 … d/<count-1> (the
 * many-tiny-entries attack), generated as it is read in 256 KiB pieces.
 */
export async function* manyDirectoriesTar(count: number): AsyncGenerator<Buffer> {
  const perPiece = 512;
  const header = (name: string) => {
    const block = Buffer.alloc(512);
    block.write(name, 0);
    block.write("0000755\0", 100);
    block.write("0000000\0", 108);
    block.write("0000000\0", 116);
    block.write("00000000000\0", 124);
    block.write("14000000000\0", 136);
    block.write("5", 156);
    block.write("ustar\u000000", 257);
    block.write("        ", 148);
    let sum = 0;
    for (const byte of block) sum += byte;
    block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
    return block;
  };
  yield header("d/");
  for (let first = 0; first < count; first += perPiece) {
    const blocks: Buffer[] = [];
    for (let i = first; i < Math.min(count, first + perPiece); i++) blocks.push(header(`d/${i}/`));
    yield Buffer.concat(blocks);
  }
  yield Buffer.alloc(1024);
}

export interface ReadEntry {
  name: string;
  type: string;
  mode: number;
  linkname?: string;
  size: number;
  sha256: string;
  /** Content of small files (up to 64 KiB), for assertions. */
  text?: string;
}

/** Parses a tar stream, hashing each file's content as it passes. */
export async function readTar(chunks: AsyncIterable<Buffer>): Promise<ReadEntry[]> {
  const parser = extract();
  const feeding = pipeline(Readable.from(chunks), parser as unknown as NodeJS.WritableStream);
  feeding.catch(() => {}); // surfaced below, after the entries
  const entries: ReadEntry[] = [];
  try {
    for await (const entry of parser) {
      const hash = createHash("sha256");
      const small: Buffer[] = [];
      let size = 0;
      for await (const chunk of entry as AsyncIterable<Buffer>) {
        hash.update(chunk);
        size += chunk.length;
        if (size <= 64 * 1024) small.push(chunk);
      }
      const { header } = entry;
      entries.push({
        name: header.name,
        type: header.type,
        // Permission bits only: some archivers (Docker's) put the file type bits in the mode too.
        mode: header.mode & 0o7777,
        linkname: header.linkname || undefined,
        size,
        sha256: hash.digest("hex"),
        text: size <= 64 * 1024 ? Buffer.concat(small).toString() : undefined,
      });
    }
  } finally {
    await feeding;
  }
  return entries;
}
