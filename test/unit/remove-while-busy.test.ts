/**
 * Remove while calls are in flight, and the lifecycle's failure paths, in
 * process against the labelled fake driver: Remove aborts a booting Start,
 * a stalled CopyIn and every running Exec, and waits for them before the
 * driver removes; a Create that fails or is cancelled leaves nothing behind;
 * a Create berth cannot record is undone. (Remove during one Exec, and a
 * refused Remove, are in environments.test.ts.)
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Status } from "../../src/errors.js";
import { environmentSpec } from "../../src/protocol/common.js";
import type { EnvironmentRecord } from "../../src/state-store.js";
import { code, core, create, exec, never, outcome, until } from "./core-setup.js";
import type { FakeDriver } from "./fake-driver.js";

/** Counts the driver's Execs that have returned or thrown. */
function countCommandsOver(driver: FakeDriver): () => number {
  let over = 0;
  const run = driver.exec.bind(driver);
  driver.exec = async (...args) => {
    try {
      return await run(...args);
    } finally {
      over++;
    }
  };
  return () => over;
}

/** A regression that leaves a call hanging fails its test instead of stalling the stage. */
const hangs = { timeout: 10_000 };

describe("Remove while calls run", () => {
  test("a booting Start is aborted, then the environment removed", hangs, async () => {
    const c = core();
    c.driver.hangs.add("start");
    const id = await create(c);
    const lines: string[] = [];
    const starting = outcome(
      (async () => {
        for await (const event of c.service.start(id, never))
          if (event.type === "progress") lines.push(event.line);
      })(),
    );
    await until(() => lines.length === 1);
    await c.service.remove(id);
    assert.equal(await starting, "ABORTED");
    assert.deepEqual(c.driver.removed, [id]);
  });

  test(
    "a CopyIn whose client sends nothing more is aborted, then the environment removed",
    hangs,
    async () => {
      const c = core();
      const id = await create(c);
      let stalled = false;
      async function* parts() {
        yield { environmentId: id, destPath: "/workspace", data: new Uint8Array(0) };
        stalled = true;
        await new Promise(() => {});
      }
      const copying = outcome(c.service.copyIn(parts(), never));
      await until(() => stalled);
      await c.service.remove(id);
      assert.equal(await copying, "ABORTED");
      assert.deepEqual(c.driver.copiedIn, []);
      assert.deepEqual(c.driver.removed, [id]);
    },
  );

  test(
    "every running Exec is aborted and waited for; the driver removes once, after the last",
    hangs,
    async () => {
      const c = core();
      c.driver.dyingMs = 30;
      const commandsOver = countCommandsOver(c.driver);
      let overAtRemoval: number | undefined;
      const remove = c.driver.remove.bind(c.driver);
      c.driver.remove = (ref) => {
        overAtRemoval = commandsOver();
        return remove(ref);
      };
      const id = await create(c);
      const running = [1, 2, 3].map((n) => outcome(exec(c, id, ["wait", `g${n}`])));
      await until(() => c.driver.workdirs.length === 3);
      await c.service.remove(id);
      assert.equal(overAtRemoval, 3, "all three commands were over when the driver removed");
      assert.deepEqual(await Promise.all(running), ["ABORTED", "ABORTED", "ABORTED"]);
      assert.deepEqual(c.driver.removed, [id]);
      assert.match(await c.metrics.text(), /^berth_exec_cancellations_total\{backend="fake"\} 3$/m);
    },
  );

  test("health and Start on an environment being removed are NOT_FOUND", hangs, async () => {
    const c = core();
    c.driver.dyingMs = 50;
    const id = await create(c);
    const running = outcome(exec(c, id, ["wait", "never"]));
    await until(() => c.driver.workdirs.length === 1);
    const removal = c.service.remove(id);
    await assert.rejects(c.service.health(id, never), code(Status.NOT_FOUND, /is being removed/));
    await assert.rejects(c.service.start(id, never).next(), code(Status.NOT_FOUND, /is being removed/));
    await removal;
    assert.equal(await running, "ABORTED");
  });

  test(
    "Remove of an id berth does not know, or knows no more, succeeds and asks the driver nothing",
    hangs,
    async () => {
      const c = core();
      await c.service.remove("berth-00000000000000aa");
      const id = await create(c);
      await c.service.remove(id);
      await c.service.remove(id);
      assert.deepEqual(c.driver.removed, [id]);
    },
  );

  test(
    "a consumer that stops reading an Exec aborts the command, and is let go once it is over",
    hangs,
    async () => {
      const c = core();
      c.driver.dyingMs = 20;
      const commandsOver = countCommandsOver(c.driver);
      const id = await create(c);
      const spec = { command: ["announce", "started"], env: {}, user: "", workdir: "" };
      for await (const event of c.service.exec(id, spec, never)) {
        assert.deepEqual(
          [event.type, event.type === "output" && event.data.toString()],
          ["output", "started\n"],
        );
        break;
      }
      assert.equal(commandsOver(), 1, "the command was over when the consumer was let go");
      assert.match(await c.metrics.text(), /^berth_exec_cancellations_total\{backend="fake"\} 1$/m);
      await c.service.remove(id);
      assert.deepEqual(c.driver.removed, [id]);
    },
  );
});

describe("Create's failure paths", () => {
  test(
    "a Create cancelled while the driver works is cleaned up by the driver and holds no slot",
    hangs,
    async () => {
      const c = core({ maxEnvironments: 1 });
      c.driver.hangs.add("create");
      const cancel = new AbortController();
      const creating = c.service.create(c.backend, environmentSpec({}), cancel.signal);
      await until(() => c.driver.created.length === 1);
      const { id } = c.driver.created[0];
      assert.equal(c.service.knows(id), true, "an id being created is known (not an orphan)");
      cancel.abort(new Error("the runner gave up"));
      await assert.rejects(creating, /the runner gave up/);
      assert.deepEqual(c.driver.removed, [id]);
      assert.equal(c.service.knows(id), false);
      assert.equal(c.service.countOf(c.backend), 0);
      assert.deepEqual(c.service.records(), []);
    },
  );

  test("a Create berth cannot record is removed again and is UNAVAILABLE", hangs, async () => {
    let failing = true;
    const saved: EnvironmentRecord[][] = [];
    const c = core({}, async (records) => {
      if (failing) throw new Error("ENOSPC: no space left on device");
      saved.push(records);
    });
    await assert.rejects(
      create(c),
      code(
        Status.UNAVAILABLE,
        /^cannot record the new environment in berth's state directory, so it was removed again: ENOSPC/,
      ),
    );
    const [{ id }] = c.driver.created;
    assert.deepEqual(c.driver.removed, [id]);
    assert.equal(c.service.knows(id), false);
    assert.equal(c.service.countOf(c.backend), 0);
    failing = false;
    const next = await create(c);
    assert.deepEqual(
      saved.map((records) => records.map((r) => r.id)),
      [[next]],
    );
  });

  test("a record that cannot be updated after a Remove is logged; the Remove succeeds", hangs, async () => {
    let failing = false;
    const c = core({}, async () => {
      if (failing) throw new Error("EROFS: read-only file system");
    });
    const id = await create(c);
    failing = true;
    await c.service.remove(id);
    assert.equal(c.service.knows(id), false);
    assert.match(c.log(), /"level":50.*EROFS.*cannot update berth's state file after a Remove/);
  });
});
