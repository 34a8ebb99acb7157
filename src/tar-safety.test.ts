import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmod,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { Status } from "nice-grpc";
import { extract, pack } from "tar-stream";
import type { Header, Pack } from "tar-stream";
import { BerthError } from "./errors.js";
import { checkedTar, normalizeEntryPath } from "./tar-safety.js";
import type { CheckedTarOptions } from "./tar-safety.js";

type HeaderArgument = Parameters<Pack["entry"]>[0];
interface Spec {
  header: HeaderArgument;
  body?: Buffer | string;
}
interface Parsed {
  header: Header;
  data: Buffer;
}

const mtime = new Date("2024-05-06T07:08:09Z");

/** Tar bytes made by tar-stream's pack(). */
async function packArchive(specs: Spec[]): Promise<Buffer> {
  const p = pack();
  const collected = (async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of p) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  })();
  for (const { header, body } of specs) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      // A file entry without a buffer would wait for its body to be written.
      if (body === undefined && header.type !== "file") p.entry({ mtime, ...header }, done);
      else p.entry({ mtime, ...header }, body ?? "", done);
    });
  }
  p.finalize();
  return collected;
}

/** The entries of tar bytes, parsed with tar-stream's extract(). */
async function listEntries(tar: Buffer): Promise<Parsed[]> {
  const ex = extract();
  const parsed = (async () => {
    const out: Parsed[] = [];
    for await (const entry of ex) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      out.push({ header: entry.header, data: Buffer.concat(chunks) });
    }
    return out;
  })();
  ex.end(tar);
  return parsed;
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function check(tar: Buffer | Readable, options?: CheckedTarOptions): Promise<Buffer> {
  const input = Buffer.isBuffer(tar) ? Readable.from([tar]) : tar;
  return collect(checkedTar(input, options));
}

/** Runs tar bytes through checkedTar and returns the parsed output. */
async function checkAndList(tar: Buffer, options?: CheckedTarOptions): Promise<Parsed[]> {
  return listEntries(await check(tar, options));
}

/**
 * Asserts that checking the archive fails with an INVALID_ARGUMENT BerthError
 * whose message matches, and that the output produced before the failure
 * holds nothing of `mustNotLeak`.
 */
async function assertRefused(
  tar: Buffer,
  message: string | RegExp,
  options?: CheckedTarOptions & { mustNotLeak?: string },
): Promise<BerthError> {
  const out = checkedTar(Readable.from([tar]), options);
  const chunks: Buffer[] = [];
  let caught: unknown;
  try {
    for await (const chunk of out) chunks.push(chunk as Buffer);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof BerthError, `expected a BerthError, got ${String(caught)}`);
  assert.equal(caught.code, Status.INVALID_ARGUMENT);
  if (typeof message === "string") assert.equal(caught.message, message);
  else assert.match(caught.message, message);
  if (options?.mustNotLeak !== undefined) {
    assert.ok(
      !Buffer.concat(chunks).includes(options.mustNotLeak),
      `output before the error holds ${options.mustNotLeak}`,
    );
  }
  return caught;
}

/** A ustar header block written by hand, for what pack() will not write. */
function ustarHeader(
  name: string | Buffer,
  typeflag: string,
  size = 0,
  linkname: string | Buffer = "",
): Buffer {
  const block = Buffer.alloc(512);
  const octal = (value: number, width: number) => value.toString(8).padStart(width - 1, "0") + "\0";
  Buffer.from(name).copy(block, 0);
  block.write(octal(0o644, 8), 100);
  block.write(octal(0, 8), 108);
  block.write(octal(0, 8), 116);
  block.write(octal(size, 12), 124);
  block.write(octal(Math.floor(mtime.getTime() / 1000), 12), 136);
  block.write(typeflag, 156);
  Buffer.from(linkname).copy(block, 157);
  block.write("ustar\u000000", 257);
  block.write("        ", 148);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(octal(sum, 7) + " ", 148);
  return block;
}

const endOfArchive = Buffer.alloc(1024);

test("normalizeEntryPath normalizes inside names and refuses the rest", () => {
  const accepted: Record<string, string> = {
    a: "a",
    "./a": "a",
    "a/": "a",
    "a//b/./c/": "a/b/c",
    ".": ".",
    "./": ".",
    "././/": ".",
    "a\\..\\b": "a\\..\\b",
    "..a/b..": "..a/b..",
  };
  for (const [name, path] of Object.entries(accepted)) {
    assert.deepEqual(normalizeEntryPath(name), { ok: true, path }, name);
  }
  const refused: Record<string, RegExp> = {
    "": /empty/,
    "/x": /absolute path/,
    "//x": /absolute path/,
    "../x": /would land outside the destination/,
    "a/../../x": /would land outside the destination/,
    "./..": /would land outside the destination/,
    "a/../b": /has a "\.\." component/,
    "a/..": /has a "\.\." component/,
    "a\0b": /NUL byte/,
  };
  for (const [name, reason] of Object.entries(refused)) {
    const result = normalizeEntryPath(name);
    assert.equal(result.ok, false, name);
    if (!result.ok) assert.match(result.reason, reason, name);
  }
});

test("a valid archive passes byte-exact with headers kept", async () => {
  const big = randomBytes(5 * 1024 * 1024 + 123);
  const longDir = `${"d".repeat(60)}/${"e".repeat(60)}`;
  const longName = "n".repeat(150);
  const longTarget = `/opt/${"t".repeat(300)}`;
  const tar = await packArchive([
    { header: { name: "./", type: "directory", mode: 0o750 } },
    { header: { name: "./dir", type: "directory", mode: 0o755, uid: 1000, gid: 1001 } },
    {
      header: {
        name: "./dir/big.bin",
        type: "file",
        mode: 0o644,
        uid: 1000,
        gid: 1001,
        uname: "u",
        gname: "g",
      },
      body: big,
    },
    { header: { name: "dir//run.sh", type: "file", mode: 0o755 }, body: "#!/bin/sh\necho hi\n" },
    // pack() turns a mode of 0 into 0o644; with the S_IFREG bit it writes 0.
    { header: { name: "locked", type: "file", mode: 0o100000 }, body: "no permissions" },
    { header: { name: "empty", type: "file", mode: 0o600 }, body: "" },
    { header: { name: "python", type: "symlink", linkname: "/usr/bin/python3" } },
    { header: { name: "dir/up", type: "symlink", linkname: "../locked" } },
    { header: { name: "hard", type: "link", linkname: "./dir/run.sh" } },
    { header: { name: `${longDir}/${longName}`, type: "file", mode: 0o644 }, body: "long" },
    { header: { name: "longlink", type: "symlink", linkname: longTarget } },
    { header: { name: "ünïcode ✓.txt", type: "file" }, body: "ü" },
    { header: { name: "back\\slash", type: "file" }, body: "b" },
    // Replacing a symlink by a file at the same path is fine.
    { header: { name: "python", type: "file" }, body: "replaced" },
  ]);
  const out = await checkAndList(tar);

  const summary = out.map(({ header }) => [header.name, header.type, header.mode, header.linkname]);
  assert.deepEqual(summary, [
    ["./", "directory", 0o750, null],
    ["dir/", "directory", 0o755, null],
    ["dir/big.bin", "file", 0o644, null],
    ["dir/run.sh", "file", 0o755, null],
    ["locked", "file", 0, null],
    ["empty", "file", 0o600, null],
    ["python", "symlink", 0o644, "/usr/bin/python3"],
    ["dir/up", "symlink", 0o644, "../locked"],
    ["hard", "link", 0o644, "dir/run.sh"],
    [`${longDir}/${longName}`, "file", 0o644, null],
    ["longlink", "symlink", 0o644, longTarget],
    ["ünïcode ✓.txt", "file", 0o644, null],
    ["back\\slash", "file", 0o644, null],
    ["python", "file", 0o644, null],
  ]);
  const bigEntry = out[2];
  assert.ok(bigEntry.data.equals(big), "the big file's content changed");
  assert.equal(bigEntry.header.size, big.length);
  assert.equal(bigEntry.header.uid, 1000);
  assert.equal(bigEntry.header.gid, 1001);
  assert.equal(bigEntry.header.uname, "u");
  assert.equal(bigEntry.header.gname, "g");
  assert.equal(bigEntry.header.mtime.getTime(), mtime.getTime());
  assert.equal(out[3].data.toString(), "#!/bin/sh\necho hi\n");
  assert.equal(out[4].data.toString(), "no permissions");
  assert.equal(out[5].data.length, 0);
  assert.equal(out[9].data.toString(), "long");
  assert.equal(out[11].data.toString(), "ü");
  assert.equal(out[13].data.toString(), "replaced");
  for (const { header } of out) {
    if (header.type !== "file") assert.equal(header.size, 0, header.name);
  }
});

test("a body on a non-file entry is dropped, not copied", { timeout: 10_000 }, async () => {
  // A hardlink header with a body, which pack() would not write; large
  // enough that the parser stalls unless the body is read.
  const body = Buffer.alloc(100_352, 0x62);
  body.write("link-body!");
  const tar = Buffer.concat([
    (await packArchive([{ header: { name: "f", type: "file" }, body: "target" }])).subarray(0, 1024),
    ustarHeader("h", "1", 100_000, "f"),
    body,
    (await packArchive([{ header: { name: "g", type: "file" }, body: "after" }])).subarray(0, 1024),
    endOfArchive,
  ]);
  const checked = await check(tar);
  assert.ok(!checked.includes("link-body!"), "the hardlink's body was copied");
  const out = await listEntries(checked);
  assert.deepEqual(
    out.map((e) => [e.header.name, e.header.type, e.header.size, e.header.linkname, e.data.toString()]),
    [
      ["f", "file", 6, null, "target"],
      ["h", "link", 0, "f", ""],
      ["g", "file", 5, null, "after"],
    ],
  );
});

test("an archive made by the system tar comes out with the same entries", async (t) => {
  const root = await mkdtemp(join(tmpdir(), "berth-tar-safety-"));
  t.after(() => rm(root, { recursive: true, force: true }));
  const src = join(root, "src");
  await mkdir(join(src, "sub"), { recursive: true });
  await chmod(src, 0o755);
  await chmod(join(src, "sub"), 0o750);
  await writeFile(join(src, "file.txt"), "hello\n");
  await chmod(join(src, "file.txt"), 0o644);
  await writeFile(join(src, "sub", "run.sh"), "#!/bin/sh\necho hi\n");
  await chmod(join(src, "sub", "run.sh"), 0o755);
  await writeFile(join(src, "sub", "data.bin"), randomBytes(300_000));
  await chmod(join(src, "sub", "data.bin"), 0o600);
  const longName = `${"l".repeat(140)}.txt`;
  await writeFile(join(src, "sub", longName), "long name");
  await chmod(join(src, "sub", longName), 0o644);
  await symlink("../file.txt", join(src, "sub", "rel-link"));
  await symlink("/usr/bin/python3", join(src, "abs-link"));
  await link(join(src, "file.txt"), join(src, "sub", "hard.txt"));

  const expectedNames = [
    "./",
    "abs-link",
    "file.txt",
    "sub/",
    "sub/data.bin",
    "sub/hard.txt",
    `sub/${longName}`,
    "sub/rel-link",
    "sub/run.sh",
  ];

  for (const format of ["gnu", "posix"]) {
    const tar = execFileSync("tar", [`--format=${format}`, "-C", src, "-cf", "-", "."], {
      maxBuffer: 64 * 1024 * 1024,
    });
    const out = await checkAndList(tar);
    assert.deepEqual(out.map((e) => e.header.name).sort(), expectedNames, format);

    const links = out.filter((e) => e.header.type === "link");
    assert.equal(links.length, 1, `${format}: one hardlink`);
    const linkTarget = links[0].header.linkname;
    assert.ok(
      ["file.txt", "sub/hard.txt"].includes(linkTarget) && linkTarget !== links[0].header.name,
      `${format}: hardlink ${links[0].header.name} -> ${linkTarget}`,
    );
    assert.ok(
      out.findIndex((e) => e.header.name === linkTarget) < out.indexOf(links[0]),
      "the hardlink comes after its target",
    );

    for (const { header, data } of out) {
      const path = join(src, header.name);
      const stat = await lstat(path);
      assert.equal(header.mode, stat.mode & 0o7777, `${format}: mode of ${header.name}`);
      assert.equal(header.mtime.getTime() / 1000, Math.floor(stat.mtimeMs / 1000), header.name);
      if (header.type === "symlink") {
        assert.ok(stat.isSymbolicLink());
        assert.equal(header.linkname, await readlink(path), header.name);
      } else if (header.type === "directory") {
        assert.ok(stat.isDirectory(), header.name);
      } else if (header.type === "file") {
        assert.ok(stat.isFile(), header.name);
        assert.ok(data.equals(await readFile(path)), `${format}: content of ${header.name}`);
      }
    }

    // And the system tar extracts the output into the same tree.
    const dest = await mkdtemp(join(root, `out-${format}-`));
    const checked = await check(tar);
    execFileSync("tar", ["-C", dest, "-xpf", "-"], { input: checked });
    for (const name of expectedNames) {
      const [a, b] = await Promise.all([lstat(join(src, name)), lstat(join(dest, name))]);
      assert.equal(b.mode, a.mode, `${format}: extracted mode of ${name}`);
      if (a.isSymbolicLink()) {
        assert.equal(await readlink(join(dest, name)), await readlink(join(src, name)));
      } else if (a.isFile()) {
        assert.ok((await readFile(join(dest, name))).equals(await readFile(join(src, name))), name);
      }
    }
    const [f, h] = await Promise.all([lstat(join(dest, "file.txt")), lstat(join(dest, "sub/hard.txt"))]);
    assert.equal(f.ino, h.ino, `${format}: the hardlink is extracted as a hardlink`);
  }
});

test("an entry that escapes with .. is refused", async () => {
  await assertRefused(
    await packArchive([
      { header: { name: "ok", type: "file" }, body: "fine" },
      { header: { name: "../x", type: "file" }, body: "evil-content" },
    ]),
    'tar entry "../x" is refused: it would land outside the destination (entries must be relative paths inside it)',
    { mustNotLeak: "evil-content" },
  );
  await assertRefused(
    await packArchive([{ header: { name: "a/../../x", type: "file" }, body: "evil-content" }]),
    'tar entry "a/../../x" is refused: it would land outside the destination (entries must be relative paths inside it)',
    { mustNotLeak: "evil-content" },
  );
});

test("a .. that stays inside is refused too", async () => {
  await assertRefused(
    await packArchive([{ header: { name: "a/../b", type: "file" }, body: "x" }]),
    /^tar entry "a\/\.\.\/b" is refused: it has a "\.\." component/,
  );
});

test("an absolute entry is refused", async () => {
  await assertRefused(
    await packArchive([{ header: { name: "/x", type: "file" }, body: "evil-content" }]),
    /^tar entry "\/x" is refused: it is an absolute path, so it would land outside the destination/,
    { mustNotLeak: "evil-content" },
  );
});

test("a name from a pax header is checked like any other", async () => {
  // pack() writes the pax record after its own path, so the entry's name is "../evil".
  await assertRefused(
    await packArchive([{ header: { name: "harmless", type: "file", pax: { path: "../evil" } }, body: "x" }]),
    /^tar entry "\.\.\/evil" is refused: it would land outside/,
  );
});

test("writing through a symlink the archive made is refused", async () => {
  await assertRefused(
    await packArchive([
      { header: { name: "a", type: "symlink", linkname: "/etc" } },
      { header: { name: "a/passwd", type: "file" }, body: "root::0:0::/:/bin/sh" },
    ]),
    'tar entry "a/passwd" is refused: it would be written through "a", a symlink made earlier in the archive',
    { mustNotLeak: "root::0:0" },
  );
  await assertRefused(
    await packArchive([
      { header: { name: "a", type: "symlink", linkname: ".." } },
      { header: { name: "./a/x", type: "file" }, body: "x" },
    ]),
    /^tar entry "\.\/a\/x" is refused: it would be written through "a", a symlink/,
  );
  // Deeper symlinks and deeper entries, and other entry types.
  await assertRefused(
    await packArchive([
      { header: { name: "d", type: "directory" } },
      { header: { name: "d/s", type: "symlink", linkname: "/" } },
      { header: { name: "d/other", type: "file" }, body: "fine" },
      { header: { name: "d/s/e/f", type: "directory" } },
    ]),
    /^tar entry "d\/s\/e\/f" is refused: it would be written through "d\/s", a symlink/,
  );
  await assertRefused(
    await packArchive([
      { header: { name: "a", type: "symlink", linkname: "/" } },
      { header: { name: "a/b", type: "symlink", linkname: "/" } },
    ]),
    /^tar entry "a\/b" is refused: it would be written through "a"/,
  );
});

test("a symlink stays marked after the same path is replaced", async () => {
  await assertRefused(
    await packArchive([
      { header: { name: "a", type: "symlink", linkname: "/etc" } },
      { header: { name: "a", type: "directory" } },
      { header: { name: "a/passwd", type: "file" }, body: "x" },
    ]),
    /^tar entry "a\/passwd" is refused: it would be written through "a"/,
  );
});

test("hardlinks must stay inside the destination", async () => {
  await assertRefused(
    await packArchive([{ header: { name: "h", type: "link", linkname: "../outside" } }]),
    'tar entry "h" is refused: its hardlink target "../outside" is refused: it would land outside the destination (entries must be relative paths inside it)',
  );
  await assertRefused(
    await packArchive([{ header: { name: "h", type: "link", linkname: "/etc/passwd" } }]),
    /^tar entry "h" is refused: its hardlink target "\/etc\/passwd" is refused: it is an absolute path/,
  );
  await assertRefused(
    await packArchive([{ header: { name: "h", type: "link", linkname: "" } }]),
    /^tar entry "h" is refused: its hardlink target "" is refused: its name is empty/,
  );
  await assertRefused(
    await packArchive([{ header: { name: "h", type: "link", linkname: "./" } }]),
    'tar entry "h" is refused: its hardlink target is the destination directory itself',
  );
});

test("hardlinks through or to an archive symlink are caught", async () => {
  await assertRefused(
    await packArchive([
      { header: { name: "s", type: "symlink", linkname: "/etc" } },
      { header: { name: "h", type: "link", linkname: "s/passwd" } },
    ]),
    'tar entry "h" is refused: its hardlink target "s/passwd" goes through "s", a symlink made earlier in the archive',
  );
  // A hardlink to the symlink itself is one more name for it.
  await assertRefused(
    await packArchive([
      { header: { name: "s", type: "symlink", linkname: "/etc" } },
      { header: { name: "h", type: "link", linkname: "s" } },
      { header: { name: "h/passwd", type: "file" }, body: "x" },
    ]),
    /^tar entry "h\/passwd" is refused: it would be written through "h"/,
  );
});

test("devices, fifos and unknown types are refused by type", async () => {
  for (const type of ["fifo", "character-device", "block-device"] as const) {
    await assertRefused(
      await packArchive([{ header: { name: "dev", type } }]),
      `tar entry "dev" is refused: it is a ${type} (only files, directories, symlinks and hardlinks are accepted)`,
    );
  }
  // A GNU sparse file ('S'), which tar-stream does not know.
  await assertRefused(
    Buffer.concat([ustarHeader("sparse", "S"), endOfArchive]),
    /^tar entry "sparse" is refused: its type "unknown" is not supported/,
  );
});

test("the destination itself can only be a directory", async () => {
  const out = await checkAndList(
    await packArchive([{ header: { name: ".", type: "directory", mode: 0o700 } }]),
  );
  assert.deepEqual(
    out.map((e) => [e.header.name, e.header.type, e.header.mode]),
    [["./", "directory", 0o700]],
  );
  await assertRefused(
    await packArchive([{ header: { name: "./", type: "symlink", linkname: "/" } }]),
    'tar entry "./" is refused: it names the destination itself, which can only be a directory, not a symlink',
  );
  await assertRefused(
    await packArchive([{ header: { name: ".", type: "file" }, body: "x" }]),
    /^tar entry "\." is refused: it names the destination itself/,
  );
});

test("empty names, NUL bytes and empty symlink targets are refused", async () => {
  await assertRefused(
    Buffer.concat([ustarHeader("", "0"), endOfArchive]),
    'tar entry "" is refused: its name is empty',
  );
  // A NUL can only come in a pax record; a non-ASCII name makes pack() write one.
  await assertRefused(
    await packArchive([{ header: { name: "é\0x", type: "file" }, body: "x" }]),
    'tar entry "é\\u0000x" is refused: it contains a NUL byte',
  );
  await assertRefused(
    Buffer.concat([ustarHeader("s", "2"), endOfArchive]),
    'tar entry "s" is refused: it is a symlink with an empty target',
  );
});

test("names and link targets that are not UTF-8 are refused, not changed", async () => {
  const latin1 = Buffer.from("caf\xe9", "latin1");
  await assertRefused(
    Buffer.concat([ustarHeader(latin1, "0"), endOfArchive]),
    'tar entry "caf\ufffd" is refused: it is not valid UTF-8 (berth takes UTF-8 names only)',
  );
  await assertRefused(
    Buffer.concat([ustarHeader("s", "2", 0, latin1), endOfArchive]),
    'tar entry "s" is refused: its symlink target is not valid UTF-8 (berth takes UTF-8 names only)',
  );
  await assertRefused(
    Buffer.concat([ustarHeader("h", "1", 0, latin1), endOfArchive]),
    'tar entry "h" is refused: its hardlink target "caf\ufffd" is refused: it is not valid UTF-8 (berth takes UTF-8 names only)',
  );
});

test("the entry count limit", async () => {
  const specs: Spec[] = [1, 2, 3].map((i) => ({ header: { name: `f${i}`, type: "file" }, body: `${i}` }));
  const tar = await packArchive(specs);
  assert.equal((await checkAndList(tar, { maxEntries: 3 })).length, 3);
  await assertRefused(
    tar,
    'tar entry "f3" is refused: the archive has more than 2 entries, the maxEntries limit of this server',
    { maxEntries: 2 },
  );
});

test("the content limit counts the bytes of every file, refused with RESOURCE_EXHAUSTED before the content passes", async () => {
  const specs: Spec[] = [
    { header: { name: "a", type: "file" }, body: "x".repeat(600) },
    { header: { name: "d", type: "directory" } },
    { header: { name: "b", type: "file" }, body: "SECRET".repeat(100) },
  ];
  const tar = await packArchive(specs);
  assert.equal((await checkAndList(tar, { maxBytes: 1200 })).length, 3);
  const out = checkedTar(Readable.from([tar]), { maxBytes: 1199 });
  const chunks: Buffer[] = [];
  await assert.rejects(
    (async () => {
      for await (const chunk of out) chunks.push(chunk as Buffer);
    })(),
    (err: BerthError) => {
      assert.equal(err.code, Status.RESOURCE_EXHAUSTED);
      assert.equal(
        err.message,
        'tar entry "b" is refused: the archive holds more than 1199 bytes of files, the limit of this server for one CopyIn',
      );
      return true;
    },
  );
  assert.ok(!Buffer.concat(chunks).includes("SECRET"), "nothing of the entry over the limit passed");
});

test("the path length limit applies to names and link targets", async () => {
  const name = "x".repeat(20);
  await assertRefused(
    await packArchive([{ header: { name, type: "file" }, body: "" }]),
    `tar entry "${name}" is refused: its name is 20 bytes long, over the maxPathLength limit of 19 bytes`,
    { maxPathLength: 19 },
  );
  // Bytes, not characters.
  await assertRefused(
    await packArchive([{ header: { name: "é".repeat(10), type: "file" }, body: "" }]),
    /its name is 20 bytes long, over the maxPathLength limit of 19 bytes$/,
    { maxPathLength: 19 },
  );
  assert.equal(
    (
      await checkAndList(await packArchive([{ header: { name, type: "file" }, body: "" }]), {
        maxPathLength: 20,
      })
    ).length,
    1,
  );
  await assertRefused(
    await packArchive([{ header: { name: "l", type: "symlink", linkname: `/${name}` } }]),
    'tar entry "l" is refused: its symlink target is 21 bytes long, over the maxPathLength limit of 20 bytes',
    { maxPathLength: 20 },
  );
  await assertRefused(
    await packArchive([{ header: { name: "h", type: "link", linkname: `${name}y` } }]),
    /^tar entry "h" is refused: its hardlink target is 21 bytes long/,
    { maxPathLength: 20 },
  );
  // The default is 4096 bytes.
  await assertRefused(
    await packArchive([{ header: { name: `${"d/".repeat(2048)}x`, type: "file" }, body: "" }]),
    /its name is 4097 bytes long, over the maxPathLength limit of 4096 bytes$/,
  );
});

test("a truncated or garbage archive errors instead of hanging", { timeout: 10_000 }, async () => {
  const tar = await packArchive([{ header: { name: "f", type: "file" }, body: randomBytes(100_000) }]);
  for (const cut of [300, 512, 700, 50_000, tar.length - 1024 - 100]) {
    await assertRefused(tar.subarray(0, cut), /^the tar archive is malformed: Unexpected end of data$/);
  }
  await assertRefused(randomBytes(4096), /^the tar archive is malformed: Invalid tar header/);
  await assertRefused(gzipSync(tar), /^the tar archive is malformed: Invalid tar header.*gunzipped/);
});

test("an empty archive gives an empty archive", async () => {
  for (const input of [endOfArchive, Buffer.alloc(0), Buffer.alloc(10240)]) {
    const out = await check(input);
    assert.ok(out.equals(endOfArchive), `output for ${input.length} input bytes`);
    assert.deepEqual(await listEntries(out), []);
  }
  // No chunk at all, not even an empty one.
  assert.ok((await check(Readable.from([]))).equals(endOfArchive));
});

test("an input error is passed on as it is", async () => {
  const tar = await packArchive([{ header: { name: "f", type: "file" }, body: randomBytes(200_000) }]);
  const boom = new Error("connection reset");
  const input = new Readable({ read() {} });
  input.push(tar.subarray(0, 100_000));
  setTimeout(() => input.destroy(boom), 10);
  await assert.rejects(check(input), (err) => err === boom);
});

test("destroying the output destroys the input", async () => {
  const input = new Readable({ read() {} });
  input.push(ustarHeader("f", "0", 1_000_000));
  const out = checkedTar(input);
  out.resume();
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(input.destroyed, false);
  out.destroy();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(input.destroyed, true);
});

test("a large file streams through with bounded buffering", { timeout: 60_000 }, async () => {
  const size = 256 * 1024 * 1024;
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let pulled = 0;
  async function* source() {
    yield ustarHeader("big", "0", size);
    for (let sent = 0; sent < size; sent += chunk.length) {
      pulled += chunk.length;
      yield chunk;
    }
    yield endOfArchive;
  }
  const out = checkedTar(Readable.from(source(), { objectMode: false }));

  // Nobody reads: the checker must stop pulling soon.
  await new Promise((resolve) => setTimeout(resolve, 200));
  const pulledWhileIdle = pulled;
  assert.ok(pulledWhileIdle > 0, "nothing was read");
  assert.ok(pulledWhileIdle < 4 * 1024 * 1024, `read ${pulledWhileIdle} bytes with no reader`);

  let emitted = 0;
  let maxAhead = 0;
  let nonA = 0;
  for await (const piece of out) {
    const buf = piece as Buffer;
    if (emitted >= 512 && emitted + buf.length <= 512 + size) {
      for (let i = 0; i < buf.length; i += 4099) if (buf[i] !== 0x61) nonA++;
    }
    emitted += buf.length;
    maxAhead = Math.max(maxAhead, pulled - emitted);
  }
  assert.equal(emitted, 512 + size + 1024);
  assert.equal(nonA, 0);
  assert.ok(maxAhead < 4 * 1024 * 1024, `buffered up to ${maxAhead} bytes`);
});

test(
  "entries without a body (directories, symlinks) are held back as much as files",
  { timeout: 60_000 },
  async () => {
    const entries = 50_000;
    let pulled = 0;
    async function* source() {
      for (let i = 0; i < entries; i++) {
        pulled++;
        yield ustarHeader(`d${i}/`, "5", 0);
      }
      yield endOfArchive;
    }
    const out = checkedTar(Readable.from(source(), { objectMode: false }));
    // Nobody reads: the checker must stop pulling soon, whatever the entries' type.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.ok(pulled > 0, "nothing was read");
    assert.ok(pulled < 5_000, `pulled ${pulled} of ${entries} directory entries with no reader`);
    let emitted = 0;
    for await (const piece of out) emitted += (piece as Buffer).length;
    assert.equal(emitted, entries * 512 + 1024, "all entries come through once read");
  },
);

test("a stream of zeros is no empty archive: more than 1 MiB after the last entry is INVALID_ARGUMENT", async () => {
  let pulled = 0;
  async function* zeros() {
    for (let i = 0; i < 1024; i++) {
      pulled += 1024 * 1024;
      yield Buffer.alloc(1024 * 1024);
    }
  }
  await assert.rejects(
    (async () => {
      for await (const chunk of checkedTar(Readable.from(zeros(), { objectMode: false }))) void chunk;
    })(),
    (err: BerthError) =>
      err.code === Status.INVALID_ARGUMENT &&
      /goes on for more than \d+ bytes after its last entry/.test(err.message),
  );
  assert.ok(pulled <= 130 * 1024 * 1024, `stopped early, after ${pulled} bytes of 1 GiB`);
  // An archive padded to a 10 KiB record, as GNU tar writes it, is fine.
  const padded = Buffer.concat([ustarHeader("f", "0", 0), endOfArchive, Buffer.alloc(8192)]);
  let out = 0;
  for await (const chunk of checkedTar(Readable.from([padded]))) out += (chunk as Buffer).length;
  assert.ok(out > 0);
  // Two MiB of zeros after a real archive: refused once the input ends.
  await assert.rejects(
    (async () => {
      const long = Buffer.concat([ustarHeader("f", "0", 0), endOfArchive, Buffer.alloc(2 * 1024 * 1024)]);
      for await (const chunk of checkedTar(Readable.from([long]))) void chunk;
    })(),
    /goes on for more than 1048576 bytes after its last entry/,
  );
});
