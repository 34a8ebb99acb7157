/**
 * Deadlines in the core, in process against the labelled fake driver: a
 * backend's limits.rpcTimeoutSeconds ending a Create, Start, Exec or a
 * stalled CopyIn with DEADLINE_EXCEEDED (the driver's work aborted, not
 * left running), and an environment's environment_timeout removing it even
 * while a command runs, also for environments taken up after a restart.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StartEvent } from "../../src/environments.js";
import { Status } from "../../src/errors.js";
import { environmentSpec } from "../../src/protocol/common.js";
import { code, core, create, exec, never, outcome, until } from "./core-setup.js";
import { fakeLayout } from "./fake-driver.js";

async function drain(events: AsyncIterable<StartEvent>): Promise<string[]> {
  const lines: string[] = [];
  for await (const event of events) if (event.type === "progress") lines.push(event.line);
  return lines;
}

/** A regression that leaves a call hanging fails its test instead of stalling the stage. */
const hangs = { timeout: 10_000 };

describe("limits.rpcTimeoutSeconds", () => {
  test(
    "exec: the command is stopped and the call is DEADLINE_EXCEEDED naming the limit; the environment goes on",
    hangs,
    async () => {
      const c = core({ rpcTimeoutMs: { exec: 25 } });
      c.driver.dyingMs = 10;
      const id = await create(c);
      await assert.rejects(
        exec(c, id, ["wait", "never"]),
        code(
          Status.DEADLINE_EXCEEDED,
          /^exec took longer than backend fake allows \(limits\.rpcTimeoutSeconds\.exec = 0\.025\)$/,
        ),
      );
      assert.match(await c.metrics.text(), /^berth_exec_cancellations_total\{backend="fake"\} 1$/m);
      assert.match(
        await c.metrics.text(),
        /^berth_exec_duration_seconds_count\{backend="fake",outcome="cancelled"\} 1$/m,
      );
      assert.deepEqual(
        (await exec(c, id, ["echo", "next"])).stdout,
        "next\n",
        "a quick Exec is not affected",
      );
      await c.service.remove(id);
      assert.deepEqual(c.driver.removed, [id]);
    },
  );

  test(
    "isHealthy and remove answer DEADLINE_EXCEEDED at their deadline though the driver's call takes no signal",
    hangs,
    async () => {
      const c = core({ rpcTimeoutMs: { isHealthy: 25, remove: 25 } });
      const id = await create(c);
      let release!: () => void;
      c.driver.held = new Promise((resolve) => (release = resolve));
      await assert.rejects(
        c.service.health(id, never),
        code(Status.DEADLINE_EXCEEDED, /^isHealthy took longer than backend fake allows/),
      );
      await assert.rejects(
        c.service.remove(id),
        code(Status.DEADLINE_EXCEEDED, /^remove took longer than backend fake allows/),
      );
      assert.deepEqual(c.driver.removed, [], "both answered while the driver's calls still hung");
      assert.equal(c.service.knows(id), true, "a Remove that ran out keeps the environment");
      c.driver.held = undefined;
      release();
      await until(() => c.driver.removed.length === 1, "the first removal ends on its own");
      await c.service.remove(id);
      assert.equal(c.service.knows(id), false, "a later Remove succeeds");
    },
  );

  test(
    "exec: a driver that fails its own way once aborted still ends in DEADLINE_EXCEEDED",
    hangs,
    async () => {
      const c = core({ rpcTimeoutMs: { exec: 25 } });
      // As a backend's stream does when it is torn down: its own error, not the abort's reason.
      c.driver.exec = (_env, _spec, _sinks, signal) =>
        new Promise((_resolve, reject) =>
          signal.addEventListener("abort", () => reject(new Error("socket hang up")), { once: true }),
        );
      const id = await create(c);
      await assert.rejects(
        exec(c, id, ["anything"]),
        code(Status.DEADLINE_EXCEEDED, /^exec took longer than backend fake allows/),
      );
    },
  );

  test(
    "exec: a call its caller cancels before the deadline ends with the caller's reason",
    hangs,
    async () => {
      const c = core({ rpcTimeoutMs: { exec: 60_000 } });
      c.driver.dyingMs = 0;
      const id = await create(c);
      const cancel = new AbortController();
      const running = exec(c, id, ["wait", "never"], cancel.signal);
      await until(() => c.driver.workdirs.length === 1);
      cancel.abort(new Error("the runner cancelled the step"));
      await assert.rejects(running, /^Error: the runner cancelled the step$|the runner cancelled the step/);
    },
  );

  test(
    "create: a backend that does not answer is DEADLINE_EXCEEDED, cleaned up, and holds no slot",
    hangs,
    async () => {
      const c = core({ rpcTimeoutMs: { create: 25 }, maxEnvironments: 1 });
      c.driver.hangs.add("create");
      await assert.rejects(
        create(c),
        code(Status.DEADLINE_EXCEEDED, /create took longer than backend fake allows .*create = 0\.025/),
      );
      const [{ id }] = c.driver.created;
      assert.deepEqual(c.driver.removed, [id], "what the driver made so far is removed");
      assert.equal(c.service.knows(id), false);
      assert.equal(c.service.countOf(c.backend), 0);
      c.driver.hangs.delete("create");
      await create(c);
      assert.equal(c.service.countOf(c.backend), 1, "the one slot was free again");
    },
  );

  test(
    "start: a boot that does not end is DEADLINE_EXCEEDED after its progress; the environment stays",
    hangs,
    async () => {
      const c = core({ rpcTimeoutMs: { start: 25 } });
      c.driver.hangs.add("start");
      const id = await create(c);
      const lines: string[] = [];
      await assert.rejects(
        (async () => {
          for await (const event of c.service.start(id, never))
            if (event.type === "progress") lines.push(event.line);
        })(),
        code(Status.DEADLINE_EXCEEDED, /^start took longer than backend fake allows/),
      );
      assert.deepEqual(lines, ["fake environment booting"]);
      assert.equal(c.service.knows(id), true);
      c.driver.hangs.delete("start");
      assert.deepEqual(await drain(c.service.start(id, never)), ["fake environment ready"]);
    },
  );

  test("copyIn: a client that stops sending is ended by the deadline, not waited for", hangs, async () => {
    const c = core({ rpcTimeoutMs: { copyIn: 25 } });
    const id = await create(c);
    let stalled = false;
    async function* parts() {
      yield { environmentId: id, destPath: "/workspace", data: new Uint8Array(0) };
      stalled = true;
      await new Promise(() => {});
    }
    await assert.rejects(
      c.service.copyIn(parts(), never),
      code(Status.DEADLINE_EXCEEDED, /^copyIn took longer than backend fake allows/),
    );
    assert.equal(stalled, true);
    assert.deepEqual(c.driver.copiedIn, [], "the driver's copy did not finish");
    async function* emptyArchive() {
      yield { environmentId: id, destPath: "/workspace/./sub/", data: new Uint8Array(1024) };
    }
    await c.service.copyIn(emptyArchive(), never);
    assert.deepEqual(
      c.driver.copiedIn,
      [{ dest: "/workspace/sub/", bytes: 1024 }],
      "one that sends in time is copied",
    );
    await c.service.remove(id);
  });

  test("an RPC without a limit is not given one", hangs, async () => {
    const c = core({ rpcTimeoutMs: { start: 10 } });
    c.driver.dyingMs = 0;
    const id = await create(c);
    const running = outcome(exec(c, id, ["wait", "g"]));
    await new Promise((resolve) => setTimeout(resolve, 40));
    c.driver.open("g");
    assert.equal(await running, "finished");
  });
});

describe("environment_timeout", () => {
  test("removes the environment when it passes, aborting the command that runs", hangs, async () => {
    const c = core();
    c.driver.dyingMs = 10;
    const id = await create(c, { timeoutMs: 80 });
    const running = outcome(exec(c, id, ["wait", "never"]));
    assert.equal(await running, "ABORTED");
    await until(() => !c.service.knows(id), "the environment is gone");
    assert.deepEqual(c.driver.removed, [id]);
    assert.match(c.log(), /"level":40.*environment reached its environment_timeout; removing it/);
    await assert.rejects(exec(c, id, ["echo", "late"]), code(Status.NOT_FOUND, /not found/));
  });

  test("its deadline is on the record, and a Remove before it leaves nothing to fire", hangs, async () => {
    const c = core();
    const before = Date.now();
    const id = await create(c, { timeoutMs: 30 });
    const [record] = c.service.records();
    const deadline = Date.parse(record.deadline!);
    assert.ok(deadline >= before + 30 && deadline <= Date.now() + 30, `deadline ${record.deadline}`);
    await c.service.remove(id);
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.deepEqual(c.driver.removed, [id], "removed once");
    assert.doesNotMatch(c.log(), /reached its environment_timeout/);
  });

  test("no timeout, or job_timeout 0s: no deadline on the record", hangs, async () => {
    const c = core();
    await create(c);
    await c.service.create(c.backend, environmentSpec({ backendOptions: { job_timeout: "0s" } }), never);
    assert.deepEqual(
      c.service.records().map((r) => r.deadline),
      [undefined, undefined],
    );
  });

  test(
    "an environment taken up after a restart keeps its deadline: passed is removed at once, later stays",
    hangs,
    async () => {
      const c = core();
      const record = (id: string, deadline: Date) => ({
        id,
        backend: "fake",
        state: { fake: id },
        createdAt: new Date(Date.now() - 3_600_000).toISOString(),
        deadline: deadline.toISOString(),
        layout: fakeLayout,
      });
      const expired = "berth-00000000000000e1";
      const later = "berth-00000000000000e2";
      c.service.adopt(c.backend, record(expired, new Date(Date.now() - 1000)));
      c.service.adopt(c.backend, record(later, new Date(Date.now() + 3_600_000)));
      await until(() => !c.service.knows(expired), "the expired one is removed");
      assert.deepEqual(c.driver.removed, [expired]);
      assert.equal(c.service.knows(later), true);
      assert.equal(c.service.countOf(c.backend), 1);
      await c.service.remove(later);
    },
  );
});
