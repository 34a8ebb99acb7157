/**
 * Property tests (fast-check) of the two parsers that take hostile input:
 * the tar checker and the env-file parser, 10,000 generated cases each
 * (BERTH_FUZZ_RUNS to change it). They must never crash, never hang, answer
 * with a BerthError for bad input, and the tar checker must never let an
 * entry through that lands outside the destination.
 */
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { test } from "node:test";
import fc from "fast-check";
import { extract } from "tar-stream";
import { parseEnvFile } from "../../src/env-file.js";
import { BerthError, Status, messageOf } from "../../src/errors.js";
import { checkedTar } from "../../src/tar-safety.js";
import { type TarEntrySpec, tarOf } from "../support/tar.js";

const numRuns = Number(process.env.BERTH_FUZZ_RUNS ?? 10_000);

interface Emitted {
  name: string;
  type: string;
  linkname?: string;
}

/** Runs tar bytes through the checker; returns what it let through (also before a refusal) and the refusal. */
async function runChecker(tar: Buffer): Promise<{ emitted: Emitted[]; error?: unknown }> {
  const emitted: Emitted[] = [];
  const parser = extract();
  const parsed = (async () => {
    for await (const entry of parser) {
      emitted.push({
        name: entry.header.name,
        type: entry.header.type ?? "file",
        linkname: entry.header.linkname ?? undefined,
      });
      entry.resume();
    }
  })();
  let error: unknown;
  try {
    for await (const chunk of checkedTar(Readable.from([tar]))) {
      parser.write(chunk as Buffer);
    }
    parser.end(Buffer.alloc(0));
    await parsed;
  } catch (err) {
    error = err;
    parser.destroy();
    await parsed.catch(() => undefined);
  }
  return { emitted, error };
}

/**
 * An independent model of where an extractor puts each entry: a name must be
 * a relative path of real components, none of whose parents is a symlink the
 * archive made (an extractor would follow it anywhere); a hardlink's target
 * likewise. Returns why an entry escapes, or undefined.
 */
function escapeOf(entries: Emitted[]): string | undefined {
  const symlinks = new Set<string>();
  const inside = (path: string, what: string): string | undefined => {
    const trimmed = path.replace(/\/+$/, "");
    if (trimmed === "" || trimmed === ".")
      return what === "name" ? undefined : `${what} ${path} is the destination itself`;
    if (trimmed.startsWith("/")) return `${what} ${path} is absolute`;
    const parts = trimmed.split("/");
    if (parts.some((part) => part === "" || part === "." || part === ".."))
      return `${what} ${path} has an empty, . or .. component`;
    for (let i = 1; i < parts.length; i++) {
      if (symlinks.has(parts.slice(0, i).join("/")))
        return `${what} ${path} goes through the archive's symlink ${parts.slice(0, i).join("/")}`;
    }
    return undefined;
  };
  for (const entry of entries) {
    const problem =
      inside(entry.name, "name") ??
      (entry.type === "link" ? inside(entry.linkname ?? "", "hardlink target") : undefined);
    if (problem) return problem;
    const name = entry.name.replace(/\/+$/, "");
    if (entry.type === "symlink") symlinks.add(name);
    if (entry.type === "link" && symlinks.has((entry.linkname ?? "").replace(/\/+$/, ""))) symlinks.add(name);
    if (!["file", "directory", "symlink", "link"].includes(entry.type)) return `type ${entry.type} passed`;
  }
  return undefined;
}

const component = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom("a", "b", "c", "d") },
  { weight: 2, arbitrary: fc.constantFrom("..", ".", "") },
  { weight: 1, arbitrary: fc.string({ maxLength: 6 }) },
);
const path = fc
  .tuple(
    fc.oneof(
      { weight: 8, arbitrary: fc.constant("") },
      { weight: 1, arbitrary: fc.constantFrom("/", "./", "../") },
    ),
    fc.array(component, { minLength: 1, maxLength: 4 }),
    fc.constantFrom("", "", "/"),
  )
  .map(([prefix, parts, suffix]) => `${prefix}${parts.join("/")}${suffix}`);
const entry: fc.Arbitrary<TarEntrySpec> = fc.oneof(
  fc.record({ name: path, type: fc.constant("file" as const), content: fc.string({ maxLength: 8 }) }),
  fc.record({ name: path, type: fc.constant("directory" as const) }),
  fc.record({ name: path, type: fc.constant("directory" as const) }),
  fc.record({
    name: path,
    type: fc.constant("symlink" as const),
    linkname: fc.oneof(path, fc.constantFrom("/", "/etc", "..", "../..", "/tmp/x")),
  }),
  fc.record({ name: path, type: fc.constant("link" as const), linkname: path }),
  fc.record({ name: path, type: fc.constant("fifo" as const) }),
);

test(`tar checker: ${numRuns} generated archives never crash and never let an escaping entry through`, async () => {
  let refused = 0;
  let accepted = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 6 }), async (entries) => {
      const { emitted, error } = await runChecker(await tarOf(entries));
      if (error !== undefined) {
        refused++;
        assert.ok(error instanceof BerthError, `refused with a BerthError, not ${messageOf(error)}`);
        assert.ok(
          [Status.INVALID_ARGUMENT, Status.RESOURCE_EXHAUSTED].includes(error.code),
          `code ${error.code}`,
        );
      } else accepted++;
      // What passed, before a refusal too (a driver may have extracted it), stays inside.
      const escape = escapeOf(emitted);
      assert.equal(escape, undefined, `${escape}\nentries: ${JSON.stringify(entries)}`);
    }),
    { numRuns },
  );
  // The generator makes both kinds, so both paths were exercised.
  assert.ok(refused > numRuns / 10 && accepted > numRuns / 10, `${refused} refused, ${accepted} accepted`);
});

test(`tar checker: ${numRuns} corrupted and truncated archives end with an error or an archive, never a hang`, async () => {
  const base = await tarOf([
    { name: "dir/", type: "directory" },
    { name: "dir/file", content: "x".repeat(700) },
    { name: "dir/link", type: "symlink", linkname: "file" },
  ]);
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        // Bytes of the archive changed here and there.
        fc
          .array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), {
            minLength: 1,
            maxLength: 16,
          })
          .map((edits) => {
            const copy = Buffer.from(base);
            for (const [at, value] of edits) copy[at] = value;
            return copy;
          }),
        // Cut anywhere.
        fc.nat(base.length).map((end) => base.subarray(0, end)),
        // Not a tar at all.
        fc.uint8Array({ maxLength: 2048 }).map((bytes) => Buffer.from(bytes)),
      ),
      async (tar) => {
        const { emitted, error } = await runChecker(tar);
        if (error !== undefined)
          assert.ok(error instanceof BerthError, `a BerthError, not ${messageOf(error)}`);
        assert.equal(escapeOf(emitted), undefined);
      },
    ),
    { numRuns },
  );
});

/** Names a process environment can hold and GITHUB_ENV can set. */
const envName = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_.-]{0,12}$/);
// No NUL (no environment holds it) and no CR (a line's CR is the file's line ending; the unit tests cover it).
const envValue = fc.string({ unit: "binary", maxLength: 40 }).filter((value) => !/[\0\r]/.test(value));

test(`env file: ${numRuns} generated files read back as the variables written`, () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.tuple(envName, envValue, fc.boolean()), { selector: ([name]) => name, maxLength: 8 }),
      fc.boolean(),
      (vars, crlf) => {
        const lines: string[] = [];
        for (const [name, value, asBlock] of vars) {
          if (asBlock || value.includes("\n")) {
            // A delimiter that is no line of the value, as the runner's own writers pick.
            let delimiter = "EOF";
            while (value.split("\n").includes(delimiter)) delimiter += "_";
            lines.push(`${name}<<${delimiter}`, ...value.split("\n"), delimiter);
          } else lines.push(`${name}=${value}`);
        }
        const text = lines.join(crlf ? "\r\n" : "\n");
        assert.deepEqual(
          parseEnvFile(text),
          Object.fromEntries(vars.map(([name, value]) => [name, value])),
          JSON.stringify(text),
        );
      },
    ),
    { numRuns },
  );
});

test(`env file: ${numRuns} arbitrary inputs parse or are refused with INVALID_ARGUMENT, never crash`, () => {
  const piece = fc.oneof(
    fc.constantFrom("=", "<<", "\n", "\r\n", "\0", "EOF", "A", "B_1", "", " "),
    fc.string({ maxLength: 5 }),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        fc.array(piece, { maxLength: 30 }).map((p) => p.join("")),
        fc.string({ unit: "binary", maxLength: 200 }),
      ),
      (text) => {
        let result: Record<string, string>;
        try {
          result = parseEnvFile(text);
        } catch (err) {
          assert.ok(
            err instanceof BerthError && err.code === Status.INVALID_ARGUMENT,
            `refused with INVALID_ARGUMENT, not ${messageOf(err)}`,
          );
          assert.match(err.message, /^env file line \d+: /);
          return;
        }
        for (const [name, value] of Object.entries(result)) {
          assert.ok(name.length > 0 && !name.includes("\0") && !value.includes("\0"));
          assert.ok(!name.includes("=") && !name.includes("\n"));
        }
      },
    ),
    { numRuns },
  );
});
