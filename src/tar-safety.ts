import { Readable } from "node:stream";
import { extract as tarExtract, pack as tarPack } from "tar-stream";
import type { Extract, ExtractEvents, Header, Pack } from "tar-stream";
import { BerthError, Status, invalidArgument, messageOf } from "./errors.js";

/**
 * Streaming checker for the tar archives a runner copies into an environment.
 *
 * `checkedTar` parses an uncompressed tar stream, checks every entry's header
 * before anything of the entry is passed on, and re-packs the accepted entries
 * into a fresh tar stream: the output is what a driver extracts, so it only
 * ever holds headers this module wrote itself, from validated values.
 *
 * The rules, for names relative to the destination directory:
 *
 * - Names are normalized: empty and "." components are dropped ("./a//b" is
 *   "a/b"); "." or "./" is the destination itself and may only be a directory.
 * - Absolute names, empty names, names with a NUL byte and names with a ".."
 *   component are refused. A ".." that stays inside ("a/../b") is refused too,
 *   like GNU tar does by default: lexically it would be "b", but an extractor
 *   following "a" (which may be a symlink) resolves it somewhere else, and real
 *   archives never need it. So no accepted name, and no hardlink target, holds
 *   a ".." component at all.
 * - A symlink's target is content and may point anywhere (absolute targets are
 *   kept), but no later entry may be written through a symlink the archive
 *   created: once a path has been a symlink, any entry below it is refused.
 *   Replacing the symlink itself (same path) is allowed, but the path stays
 *   marked, since an extractor may keep a symlink where a directory comes.
 * - A hardlink's target is a path inside the destination: it gets the same
 *   checks as a name and may not go through a symlink the archive created. A
 *   hardlink to such a symlink is a second name for that symlink, so its own
 *   path is marked as a symlink as well.
 * - Only files (contiguous files become files), directories, symlinks and
 *   hardlinks pass; devices, fifos and unknown types are refused. Pax and GNU
 *   long-name headers are consumed by the parser; their path, link target and
 *   size apply to the entry and get the same checks, the rest is dropped.
 * - At most `maxEntries` entries, names and link targets of at most
 *   `maxPathLength` bytes, and at most `maxBytes` of file content in all
 *   (RESOURCE_EXHAUSTED beyond it, before the entry's content is passed on).
 *
 * File bodies are streamed through with backpressure, never buffered whole.
 */

export interface CheckedTarOptions {
  /** Most entries an archive may hold; default 1,000,000. */
  maxEntries?: number;
  /** Longest entry name or link target in UTF-8 bytes; default 4096. */
  maxPathLength?: number;
  /** Most bytes of file content in the whole archive; default 64 GiB. */
  maxBytes?: number;
}

const defaultMaxEntries = 1_000_000;
const defaultMaxPathLength = 4096;
const defaultMaxBytes = 64 * 1024 ** 3;
/** Most bytes after an archive's last entry: its end blocks and a record's padding fit many times. */
const maxTrailingBytes = 1024 * 1024;
/** While the input flows, the parser may hold back up to a message (64 MiB) not yet looked at. */
const maxGapWhileFlowing = 128 * 1024 * 1024;

/** A normalized entry path, or why it is refused. */
export type NormalizedPath = { ok: true; path: string } | { ok: false; reason: string };

const notUtf8 = "it is not valid UTF-8 (berth takes UTF-8 names only)";

const escapesReason = "it would land outside the destination (entries must be relative paths inside it)";

/**
 * Normalizes an entry name (or hardlink target) relative to the destination:
 * "." for the destination itself, else its components joined by "/" without
 * empty or "." components. Absolute paths, ".." components, empty names and
 * NUL bytes are refused, with the reason said as the end of a sentence.
 */
export function normalizeEntryPath(path: string): NormalizedPath {
  if (path === "") return { ok: false, reason: "its name is empty" };
  if (path.includes("\0")) return { ok: false, reason: "it contains a NUL byte" };
  // The parser puts U+FFFD for bytes that are not UTF-8: passing it on would write another name.
  if (path.includes("\uFFFD")) return { ok: false, reason: notUtf8 };
  if (path.startsWith("/")) {
    return { ok: false, reason: `it is an absolute path, so ${escapesReason}` };
  }
  const parts: string[] = [];
  let depth = 0;
  let hasDotDot = false;
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      hasDotDot = true;
      depth--;
      if (depth < 0) return { ok: false, reason: escapesReason };
      continue;
    }
    depth++;
    parts.push(part);
  }
  if (hasDotDot) {
    return {
      ok: false,
      reason: 'it has a ".." component (berth refuses these even when they stay inside the destination)',
    };
  }
  return { ok: true, path: parts.length === 0 ? "." : parts.join("/") };
}

/** A name for messages: quoted, escaped, and cut when very long. */
function quote(name: string): string {
  const shown = name.length > 200 ? `${name.slice(0, 200)}...` : name;
  return JSON.stringify(shown);
}

function refuse(name: string, why: string): BerthError {
  return invalidArgument(`tar entry ${quote(name)} is refused: ${why}`);
}

/** The entry types that pass, as re-emitted (a contiguous file becomes a file). */
type OutputType = "file" | "directory" | "symlink" | "link";

const typeBits: Record<OutputType, number> = {
  file: 0o100000,
  directory: 0o040000,
  symlink: 0o120000,
  link: 0o100000,
};

/** What is re-emitted of an accepted entry. */
type OutputHeader = Pick<Header, "name" | "mode" | "uid" | "gid" | "uname" | "gname" | "mtime" | "size"> & {
  type: OutputType;
  linkname?: string;
};

/** A non-negative integer header field, or 0 for garbage. */
function count(value: number | undefined): number {
  return value !== undefined && Number.isSafeInteger(value) && value >= 0 ? value : 0;
}

/** The per-archive state of the checks: entry count and the symlinks made so far. */
class EntryChecker {
  private entries = 0;
  private bytes = 0;
  private readonly symlinks = new Set<string>();

  constructor(
    private readonly maxEntries: number,
    private readonly maxPathLength: number,
    private readonly maxBytes: number,
  ) {}

  /** The header to re-emit for an entry, or throws the refusal. */
  check(header: Header): OutputHeader {
    const name = header.name;
    this.countEntry(name);
    this.checkLength(name, name, "its name");
    const type = this.acceptedType(name, header);
    const path = this.placedPath(name, type);
    let linkname: string | undefined;
    if (type === "symlink") linkname = this.symlinkTarget(name, path, header.linkname ?? "");
    else if (type === "link") linkname = this.hardlinkTarget(name, path, header.linkname ?? "");
    return outputHeader(header, type, path, linkname);
  }

  private countEntry(name: string): void {
    this.entries++;
    if (this.entries > this.maxEntries) {
      throw refuse(
        name,
        `the archive has more than ${this.maxEntries} entries, the maxEntries limit of this server`,
      );
    }
  }

  /** The type the entry is re-emitted as; a file's size counts against maxBytes. */
  private acceptedType(name: string, header: Header): OutputType {
    switch (header.type) {
      case "file":
      case "contiguous-file":
        this.countFileBytes(name, header.size);
        return "file";
      case "directory":
      case "symlink":
      case "link":
        return header.type;
      case "character-device":
      case "block-device":
      case "fifo":
        throw refuse(
          name,
          `it is a ${header.type} (only files, directories, symlinks and hardlinks are accepted)`,
        );
      default:
        throw refuse(
          name,
          `its type ${JSON.stringify(header.type ?? "unknown")} is not supported (only files, directories, symlinks and hardlinks are accepted)`,
        );
    }
  }

  private countFileBytes(name: string, size: number | undefined): void {
    this.bytes += count(size);
    if (this.bytes > this.maxBytes) {
      throw new BerthError(
        Status.RESOURCE_EXHAUSTED,
        `tar entry ${quote(name)} is refused: the archive holds more than ${this.maxBytes} bytes of files, the limit of this server for one CopyIn`,
      );
    }
  }

  /** The entry's normalized path, refused if the entry may not be written there. */
  private placedPath(name: string, type: OutputType): string {
    const normalized = normalizeEntryPath(name);
    if (!normalized.ok) throw refuse(name, normalized.reason);
    const path = normalized.path;
    if (path === ".") {
      if (type !== "directory") {
        throw refuse(name, `it names the destination itself, which can only be a directory, not a ${type}`);
      }
      return path;
    }
    const through = this.symlinkAbove(path);
    if (through !== undefined) {
      throw refuse(
        name,
        `it would be written through ${quote(through)}, a symlink made earlier in the archive`,
      );
    }
    return path;
  }

  /** A symlink's target, kept as it is; its path is marked so that nothing is written through it. */
  private symlinkTarget(name: string, path: string, target: string): string {
    if (target === "") throw refuse(name, "it is a symlink with an empty target");
    if (target.includes("\0")) throw refuse(name, "its symlink target contains a NUL byte");
    if (target.includes("\uFFFD")) throw refuse(name, `its symlink target ${notUtf8.replace(/^it /, "")}`);
    this.checkLength(name, target, "its symlink target");
    this.symlinks.add(path);
    return target;
  }

  /** A hardlink's target, normalized: inside the destination and not through a symlink of the archive. */
  private hardlinkTarget(name: string, path: string, target: string): string {
    this.checkLength(name, target, "its hardlink target");
    const normalizedTarget = normalizeEntryPath(target);
    if (!normalizedTarget.ok) {
      throw refuse(name, `its hardlink target ${quote(target)} is refused: ${normalizedTarget.reason}`);
    }
    const linkname = normalizedTarget.path;
    if (linkname === ".") {
      throw refuse(name, "its hardlink target is the destination directory itself");
    }
    const through = this.symlinkAbove(linkname);
    if (through !== undefined) {
      throw refuse(
        name,
        `its hardlink target ${quote(target)} goes through ${quote(through)}, a symlink made earlier in the archive`,
      );
    }
    // A hardlink to a symlink is a second name for it: nothing may be written through either.
    if (this.symlinks.has(linkname)) this.symlinks.add(path);
    return linkname;
  }

  private checkLength(name: string, path: string, what: string): void {
    const bytes = Buffer.byteLength(path);
    if (bytes > this.maxPathLength) {
      throw refuse(
        name,
        `${what} is ${bytes} bytes long, over the maxPathLength limit of ${this.maxPathLength} bytes`,
      );
    }
  }

  /** The closest proper ancestor of a normalized path that is a symlink of the archive. */
  private symlinkAbove(path: string): string | undefined {
    if (this.symlinks.size === 0) return undefined;
    for (let i = path.indexOf("/"); i !== -1; i = path.indexOf("/", i + 1)) {
      const ancestor = path.slice(0, i);
      if (this.symlinks.has(ancestor)) return ancestor;
    }
    return undefined;
  }
}

/** The header of an accepted entry, made of checked values only (garbage numbers become 0). */
function outputHeader(
  header: Header,
  type: OutputType,
  path: string,
  linkname: string | undefined,
): OutputHeader {
  const mtime = header.mtime;
  return {
    name: type === "directory" ? (path === "." ? "./" : `${path}/`) : path,
    type,
    // With the type bits the mode is never 0, which pack() would replace by
    // a default; the header only stores the permission bits.
    mode: typeBits[type] | (count(header.mode) & 0o7777),
    uid: count(header.uid),
    gid: count(header.gid),
    uname: header.uname ?? "",
    gname: header.gname ?? "",
    mtime: mtime !== undefined && mtime.getTime() >= 0 ? mtime : new Date(0),
    linkname,
    size: type === "file" ? count(header.size) : 0,
  };
}

/** An entry's body as extract() hands it out. */
type Source = ExtractEvents["entry"][1];

/** Resolves when pack() has taken in the whole entry. */
function packEntry(pack: Pack, header: OutputHeader, body?: Source): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error | null) => (err ? reject(err) : resolve());
    const sink = pack.entry(header, done);
    // streamx's pipe() passes backpressure on and destroys both ends on error.
    if (body !== undefined) body.pipe(sink, (err) => (err ? reject(err) : undefined));
  });
}

/** A chunk of the input as the Buffer extract() needs. */
function asBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError(
    `a tar stream must be made of bytes, not of ${typeof chunk === "string" ? "strings" : typeof chunk}`,
  );
}

function malformed(err: unknown): BerthError {
  if (err instanceof BerthError) return err;
  return new BerthError(Status.INVALID_ARGUMENT, `the tar archive is malformed: ${messageOf(err)}`, {
    cause: err,
  });
}

/**
 * Checks a tar stream entry by entry and re-emits the accepted entries as a
 * new tar stream (see the rules at the top of this module).
 *
 * The first refused entry, a malformed archive, or an error of `input`
 * destroys the returned stream with that error (a refusal or malformed archive
 * is an INVALID_ARGUMENT BerthError; an input error is passed on as it is).
 * The returned stream owns `input`: destroying it, or any error, destroys
 * `input` too.
 */
export function checkedTar(input: Readable, options: CheckedTarOptions = {}): Readable {
  const checker = entryCheckerFor(options);
  const extract: Extract = tarExtract();
  const pack: Pack = tarPack();
  const repacked = repackedOutput(pack, () => {
    extract.destroy();
    pack.destroy();
    input.destroy();
  });
  // Errors reach us through the loops below; this keeps an 'error' event with
  // no other listener from throwing.
  extract.on("error", () => {});
  const trailing = new TrailingBytesCheck();
  feedExtract(input, extract, repacked.output, trailing).catch(repacked.fail);
  repackEntries(extract, pack, checker, repacked, trailing).catch(repacked.fail);
  return repacked.output;
}

/** A checker with the options' limits (or the defaults); RangeError for a limit that is no count. */
function entryCheckerFor(options: CheckedTarOptions): EntryChecker {
  const maxEntries = options.maxEntries ?? defaultMaxEntries;
  const maxPathLength = options.maxPathLength ?? defaultMaxPathLength;
  const maxBytes = options.maxBytes ?? defaultMaxBytes;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
    throw new RangeError(`maxBytes must be a non-negative integer, not ${maxBytes}`);
  }
  if (!Number.isSafeInteger(maxEntries) || maxEntries < 0) {
    throw new RangeError(`maxEntries must be a non-negative integer, not ${maxEntries}`);
  }
  if (!Number.isSafeInteger(maxPathLength) || maxPathLength < 1) {
    throw new RangeError(`maxPathLength must be a positive integer, not ${maxPathLength}`);
  }
  return new EntryChecker(maxEntries, maxPathLength, maxBytes);
}

/** The stream checkedTar returns, and what the loops that fill it need of it. */
interface RepackedOutput {
  output: Readable;
  /**
   * Resolves once the consumer has asked for more (at once while it wants
   * more). Every entry, whatever its type, waits for it: files are held back
   * by their bodies, but a directory's or symlink's header costs pack()
   * nothing, and an archive of a million of them would otherwise pile up in
   * its buffer ahead of a slow extractor.
   */
  room: () => Promise<void>;
  /** Destroys the output with the error, unless it is over already. */
  fail: (err: unknown) => void;
}

/**
 * The output pack() writes into, with pack() paused while the consumer does
 * not ask for more. Destroying it before pack() has ended calls destroySources.
 */
function repackedOutput(pack: Pack, destroySources: () => void): RepackedOutput {
  let finished = false;
  /** Set while the consumer has not asked for more. */
  let waitingForRoom: { promise: Promise<void>; resolve: () => void } | undefined;

  const output = new Readable({
    read() {
      waitingForRoom?.resolve();
      waitingForRoom = undefined;
      pack.resume();
    },
    destroy(err, callback) {
      waitingForRoom?.resolve();
      if (!finished) destroySources();
      callback(err);
    },
  });
  const fail = (err: unknown): void => {
    if (finished || output.destroyed) return;
    output.destroy(err instanceof Error ? err : new Error(String(err)));
  };

  // A pack error comes from an entry body failing, i.e. from the archive.
  pack.on("error", (err) => fail(malformed(err)));
  pack.on("data", (chunk) => {
    if (output.push(chunk) || waitingForRoom) return;
    pack.pause();
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    waitingForRoom = { promise, resolve };
  });
  pack.on("end", () => {
    finished = true;
    output.push(null);
  });
  return { output, room: () => waitingForRoom?.promise ?? Promise.resolve(), fail };
}

/**
 * Where the last entry ended in the input, and how much was fed. A tar ends
 * with two zero blocks and at most a record of padding, but tar-stream
 * takes any number of zero blocks for the end, so an endless stream of
 * zeros would pass as "an empty archive" without this. While the input
 * flows only a gap far beyond what the parser can hold back (one message
 * of at most 64 MiB) is refused; at its end the exact rest is checked.
 */
class TrailingBytesCheck {
  private fed = 0;
  private lastEntryEnd = 0;

  countFed(length: number): void {
    this.fed += length;
  }

  entryParsed(header: Header): void {
    const offset = (header as { byteOffset?: number }).byteOffset ?? 0;
    this.lastEntryEnd = offset + Math.ceil(count(header.size) / 512) * 512;
  }

  /** The refusal if more than limit bytes were fed after the last entry. */
  problem(limit: number): BerthError | undefined {
    return this.fed - this.lastEntryEnd > limit
      ? invalidArgument(
          `the tar archive goes on for more than ${limit} bytes after its last entry (a tar ends with two zero blocks and some padding); send one archive, uncompressed`,
        )
      : undefined;
  }
}

/** Writes the input into extract() as fast as it takes it, until the end or the output is gone. */
async function feedExtract(
  input: Readable,
  extract: Extract,
  output: Readable,
  trailing: TrailingBytesCheck,
): Promise<void> {
  for await (const chunk of input as AsyncIterable<unknown>) {
    if (output.destroyed) return;
    const bytes = asBuffer(chunk);
    trailing.countFed(bytes.length);
    const endless = trailing.problem(maxGapWhileFlowing);
    if (endless) throw endless;
    if (!extract.write(bytes)) await drainedOrClosed(extract);
  }
  extract.end(undefined);
}

/** Resolves when extract() takes input again, or is closed and never will. */
function drainedOrClosed(extract: Extract): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      extract.off("drain", done);
      extract.off("close", done);
      resolve();
    };
    extract.on("drain", done);
    extract.on("close", done);
  });
}

/** Checks each entry extract() parses and packs the accepted ones, then ends the new archive. */
async function repackEntries(
  extract: Extract,
  pack: Pack,
  checker: EntryChecker,
  { output, room }: RepackedOutput,
  trailing: TrailingBytesCheck,
): Promise<void> {
  try {
    for await (const entry of extract) {
      trailing.entryParsed(entry.header);
      await room();
      if (output.destroyed) return;
      const header = checker.check(entry.header);
      if (header.type === "file") {
        await packEntry(pack, header, entry);
      } else {
        // Nothing of a non-file's body (normally empty) is kept.
        entry.resume();
        await packEntry(pack, header);
      }
    }
  } catch (err) {
    throw malformed(err);
  }
  const trailingProblem = trailing.problem(maxTrailingBytes);
  if (trailingProblem) throw trailingProblem;
  pack.finalize();
}
