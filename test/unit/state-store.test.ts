/**
 * The state store in process, on a temporary directory: records written and
 * read back as they were, the file replaced whole (mode 0600, no temporary
 * left), writes in call order, and a damaged file moved aside so berth
 * starts without records instead of not at all.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Status } from "../../src/errors.js";
import { type EnvironmentRecord, StateStore, stateFileName } from "../../src/state-store.js";
import { code, memoryLogger } from "./core-setup.js";
import { fakeLayout } from "./fake-driver.js";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "berth-state-store-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const full: EnvironmentRecord = {
  id: "berth-0123456789abcdef",
  backend: "docker",
  state: { containers: ["a", "b"], network: "berth-net", nested: { n: 1, ok: true, none: null } },
  createdAt: "2025-01-02T03:04:05.678Z",
  deadline: "2025-01-02T09:04:05.678Z",
  layout: fakeLayout,
  workdir: "/workspace/acme/widget",
};
/** A record of a berth before 0.2: no layout, no workdir, no deadline. */
const old: EnvironmentRecord = {
  id: "berth-fedcba9876543210",
  backend: "host",
  state: "/var/lib/berth/envs/x",
  createdAt: "2024-06-01T00:00:00.000Z",
};

describe("records", () => {
  test("no file yet: no records, and the state directory is made (mode 0700)", async () => {
    await withDir(async (dir) => {
      const stateDir = join(dir, "nested", "state");
      const { logger } = memoryLogger();
      assert.deepEqual(await new StateStore(stateDir, logger).load(), []);
      assert.equal((await stat(stateDir)).mode & 0o777, 0o700);
    });
  });

  test("what is saved is loaded back as it was, by a new store on the same directory", async () => {
    await withDir(async (dir) => {
      const { logger } = memoryLogger();
      const store = new StateStore(dir, logger);
      await store.load();
      await store.save([full, old]);
      assert.deepEqual(await new StateStore(dir, logger).load(), [full, old]);
      await store.save([]);
      assert.deepEqual(await new StateStore(dir, logger).load(), []);
    });
  });

  test("the file: version 1, mode 0600, no temporary file left beside it", async () => {
    await withDir(async (dir) => {
      const { logger } = memoryLogger();
      await new StateStore(dir, logger).save([old]);
      const file = join(dir, stateFileName);
      assert.deepEqual(JSON.parse(await readFile(file, "utf8")), { version: 1, environments: [old] });
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      assert.deepEqual(await readdir(dir), [stateFileName]);
    });
  });

  test("saves made at once are written one after another: the last one called is the file", async () => {
    await withDir(async (dir) => {
      const { logger } = memoryLogger();
      const store = new StateStore(dir, logger);
      const records = Array.from({ length: 20 }, (_, i) => ({
        ...old,
        id: `berth-${i.toString(16).padStart(16, "0")}`,
      }));
      await Promise.all(records.map((_, i) => store.save(records.slice(0, i + 1))));
      assert.deepEqual(await new StateStore(dir, logger).load(), records);
    });
  });

  test("a save that fails rejects, is logged, and does not stop the saves after it", async () => {
    await withDir(async (dir) => {
      const { logger, log } = memoryLogger();
      const stateDir = join(dir, "state");
      const store = new StateStore(stateDir, logger);
      // No directory to write into yet.
      await assert.rejects(store.save([old]), /ENOENT/);
      assert.match(log(), /"level":50.*cannot write the state file/);
      await mkdir(stateDir);
      await store.save([full]);
      assert.deepEqual(await new StateStore(stateDir, logger).load(), [full]);
    });
  });
});

describe("a damaged file", () => {
  const damaged: [string, string, RegExp][] = [
    ["cut short", '{"version":1,"environments":[{"id":"berth-0123', /JSON/],
    ["not JSON", "\0\0\0\0", /JSON/],
    ["another version", JSON.stringify({ version: 2, environments: [] }), /version/],
    [
      "an id berth never makes",
      JSON.stringify({ version: 1, environments: [{ ...old, id: "../../etc" }] }),
      /environments\.0\.id/,
    ],
    [
      "no backend",
      JSON.stringify({ version: 1, environments: [{ ...old, backend: "" }] }),
      /environments\.0\.backend/,
    ],
    [
      "a time that is no time",
      JSON.stringify({ version: 1, environments: [{ ...old, createdAt: "yesterday" }] }),
      /createdAt/,
    ],
    [
      "an unknown key",
      JSON.stringify({ version: 1, environments: [{ ...old, extra: 1 }] }),
      /environments\.0/,
    ],
    [
      "a layout without its paths",
      JSON.stringify({ version: 1, environments: [{ ...old, layout: { rootPath: "/" } }] }),
      /layout/,
    ],
  ];
  for (const [what, text, problem] of damaged) {
    test(`${what}: moved aside and logged; berth starts without records`, async () => {
      await withDir(async (dir) => {
        const { logger, log } = memoryLogger();
        const file = join(dir, stateFileName);
        await writeFile(file, text);
        const store = new StateStore(dir, logger);
        assert.deepEqual(await store.load(), []);
        const files = await readdir(dir);
        assert.equal(files.length, 1);
        assert.match(files[0], /^environments\.json\.corrupt-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z$/);
        assert.equal(
          await readFile(join(dir, files[0]), "utf8"),
          text,
          "kept as it was, for a person to look at",
        );
        const line = log()
          .split("\n")
          .find((l) => l.includes("the state file is damaged"));
        assert.ok(line, "the damage is logged");
        const entry = JSON.parse(line) as { level: number; problem: string; movedTo: string };
        assert.equal(entry.level, 50);
        assert.match(entry.problem, problem);
        assert.equal(entry.movedTo, join(dir, files[0]));
        await store.save([old]);
        assert.deepEqual(await new StateStore(dir, logger).load(), [old], "the next save makes a good file");
      });
    });
  }

  test("a state file that cannot be read (a directory) is FAILED_PRECONDITION naming it", async () => {
    await withDir(async (dir) => {
      await mkdir(join(dir, stateFileName));
      const { logger } = memoryLogger();
      await assert.rejects(
        new StateStore(dir, logger).load(),
        code(Status.FAILED_PRECONDITION, /^cannot read the state file .*environments\.json: EISDIR/),
      );
    });
  });

  test("a state directory that cannot be made (a file is in the way) is FAILED_PRECONDITION naming it", async () => {
    await withDir(async (dir) => {
      const blocked = join(dir, "state");
      await writeFile(blocked, "");
      const { logger } = memoryLogger();
      await assert.rejects(
        new StateStore(join(blocked, "sub"), logger).load(),
        code(Status.FAILED_PRECONDITION, /^cannot create the state directory .*state\/sub: ENOTDIR/),
      );
    });
  });
});
