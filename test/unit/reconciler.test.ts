/**
 * The reconciler in process, over labelled fake drivers whose listManaged
 * says what a backend holds: orphans (no live record) go once they are
 * older than the grace period, live environments only past maxAge and
 * through the core, nothing goes in a dry run, and a backend that cannot be
 * listed or an environment that cannot be removed does not stop the pass.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ManagedEnvironment } from "../../src/driver.js";
import type { Backend } from "../../src/environments.js";
import { failedPrecondition } from "../../src/errors.js";
import { type ReconcileOptions, reconcile } from "../../src/reconciler.js";
import { core, create, memoryLogger } from "./core-setup.js";
import { FakeDriver, fakeSavedState } from "./fake-driver.js";

const now = new Date("2025-03-01T12:00:00.000Z");
const ago = (ms: number) => new Date(now.getTime() - ms);
const id = (n: number) => `berth-${n.toString(16).padStart(16, "0")}`;

function backend(name: string, managed: ManagedEnvironment[]): Backend & { driver: FakeDriver } {
  const driver = new FakeDriver();
  driver.managed = managed;
  return {
    name,
    driver,
    savedState: fakeSavedState,
    limits: { createWaitMs: 0, rpcTimeoutMs: {} },
    strictBackendOptions: false,
  };
}

/** A pass with no live environments, a two-minute grace and no maximum age, unless overridden. */
function pass(backends: Backend[], options: Partial<ReconcileOptions> = {}) {
  const { logger, log } = memoryLogger();
  const removedLive: string[] = [];
  const removals = reconcile({
    backends,
    isLive: () => false,
    removeLive: async (found) => void removedLive.push(found.id),
    orphanGraceMs: 120_000,
    logger,
    now,
    ...options,
  });
  return { removals, removedLive, log };
}

describe("orphans", () => {
  test("removed through the driver, with the state it listed, once past the grace period", async () => {
    const fake = backend("docker", [
      { id: id(1), createdAt: ago(120_001), state: { container: "c1" } },
      { id: id(2), createdAt: ago(119_999), state: { container: "c2" } },
      { id: id(3), createdAt: ago(120_000), state: { container: "c3" } },
    ]);
    const removedWith: unknown[] = [];
    const remove = fake.driver.remove.bind(fake.driver);
    fake.driver.remove = async (ref) => {
      removedWith.push(ref);
      return remove(ref);
    };
    const { removals, removedLive, log } = pass([fake]);
    assert.deepEqual(await removals, [
      { backend: "docker", id: id(1), reason: "orphan", createdAt: ago(120_001) },
      { backend: "docker", id: id(3), reason: "orphan", createdAt: ago(120_000) },
    ]);
    assert.deepEqual(fake.driver.removed, [id(1), id(3)], "one younger than the grace period stays");
    assert.deepEqual(removedWith, [
      { id: id(1), state: { container: "c1" } },
      { id: id(3), state: { container: "c3" } },
    ]);
    assert.deepEqual(removedLive, []);
    assert.match(
      log(),
      new RegExp(`"environmentId":"${id(1)}","reason":"orphan".*reconciler removed an environment`),
    );
  });

  test("one whose creation time is unknown counts as old enough", async () => {
    const fake = backend("host", [{ id: id(4), state: undefined }]);
    assert.deepEqual(await pass([fake], { orphanGraceMs: 3_600_000 }).removals, [
      { backend: "host", id: id(4), reason: "orphan", createdAt: undefined },
    ]);
    assert.deepEqual(fake.driver.removed, [id(4)]);
  });

  test("a grace of zero takes any orphan at once", async () => {
    const fake = backend("host", [{ id: id(5), createdAt: now, state: undefined }]);
    assert.equal((await pass([fake], { orphanGraceMs: 0 }).removals).length, 1);
    assert.deepEqual(fake.driver.removed, [id(5)]);
  });
});

describe("live environments", () => {
  const live = new Set([id(10), id(11)]);
  const managed = () => [
    { id: id(10), createdAt: ago(3_600_001), state: "old" },
    { id: id(11), createdAt: ago(3_600_000), state: "exactly max age" },
    { id: id(12), createdAt: ago(600_000), state: "orphan" },
  ];

  test("never taken for orphans, whatever their age, without a maximum age", async () => {
    const fake = backend("k8s", managed());
    const { removals, removedLive } = pass([fake], { isLive: (envId) => live.has(envId) });
    assert.deepEqual(
      (await removals).map((r) => [r.id, r.reason]),
      [[id(12), "orphan"]],
    );
    assert.deepEqual(removedLive, []);
    assert.deepEqual(fake.driver.removed, [id(12)]);
  });

  test("past maxAge: removed through the core (removeLive), not the driver", async () => {
    const fake = backend("k8s", managed());
    const { removals, removedLive } = pass([fake], {
      isLive: (envId) => live.has(envId),
      maxAgeMs: 3_600_000,
    });
    assert.deepEqual(
      (await removals).map((r) => [r.id, r.reason]),
      [
        [id(10), "too old"],
        [id(12), "orphan"],
      ],
    );
    assert.deepEqual(removedLive, [id(10)], "exactly maxAge is not past it");
    assert.deepEqual(fake.driver.removed, [id(12)]);
  });
});

describe("a pass", () => {
  test("in a dry run says what would go and removes nothing", async () => {
    const fake = backend("docker", [
      { id: id(20), createdAt: ago(999_999), state: undefined },
      { id: id(21), createdAt: ago(999_999), state: undefined },
    ]);
    const { removals, removedLive } = pass([fake], {
      dryRun: true,
      isLive: (envId) => envId === id(21),
      maxAgeMs: 1000,
    });
    assert.deepEqual(
      (await removals).map((r) => [r.id, r.reason, r.error]),
      [
        [id(20), "orphan", undefined],
        [id(21), "too old", undefined],
      ],
    );
    assert.deepEqual(fake.driver.removed, []);
    assert.deepEqual(removedLive, []);
  });

  test("goes on past a backend it cannot list and an environment it cannot remove", async () => {
    const unlisted = backend("broken", []);
    unlisted.driver.listError = new Error("connect ECONNREFUSED /var/run/docker.sock");
    const stubborn = backend("docker", [
      { id: id(30), createdAt: ago(999_999), state: undefined },
      { id: id(31), createdAt: ago(999_999), state: undefined },
    ]);
    stubborn.driver.failNextRemove = true;
    const liveFails = backend("k8s", [{ id: id(32), createdAt: ago(999_999), state: undefined }]);
    const { removals, log } = pass([unlisted, stubborn, liveFails], {
      isLive: (envId) => envId === id(32),
      maxAgeMs: 1000,
      removeLive: () => Promise.reject(failedPrecondition("the environment is busy")),
    });
    assert.deepEqual(
      (await removals).map((r) => [r.backend, r.id, r.reason, r.error]),
      [
        ["docker", id(30), "orphan", "fake driver: the backend refused the removal"],
        ["docker", id(31), "orphan", undefined],
        ["k8s", id(32), "too old", "the environment is busy"],
      ],
    );
    assert.deepEqual(stubborn.driver.removed, [id(31)]);
    assert.match(
      log(),
      /"backend":"broken".*ECONNREFUSED.*reconciler: cannot list the backend's environments/,
    );
    assert.match(
      log(),
      new RegExp(`"environmentId":"${id(30)}".*reconciler could not remove an environment`),
    );
  });
});

describe("with the core", () => {
  test("what the core knows stays, an orphan beside it goes, and maxAge removes through the core", async () => {
    const c = core();
    const kept = await create(c);
    const createdAt = c.service.live()[0].createdAt;
    c.driver.managed = [
      { id: kept, createdAt, state: { fake: kept } },
      { id: id(40), createdAt: new Date(createdAt.getTime() - 60_000), state: undefined },
    ];
    const options = {
      backends: [c.backend],
      isLive: (envId: string) => c.service.knows(envId),
      removeLive: (found: ManagedEnvironment) => c.service.remove(found.id),
      orphanGraceMs: 30_000,
      logger: c.logger,
      now: new Date(createdAt.getTime() + 1000),
    };
    assert.deepEqual(
      (await reconcile(options)).map((r) => [r.id, r.reason]),
      [[id(40), "orphan"]],
    );
    assert.equal(c.service.knows(kept), true);
    assert.deepEqual(c.driver.removed, [id(40)]);

    c.driver.managed = c.driver.managed.filter((found) => found.id === kept);
    assert.deepEqual(
      (await reconcile({ ...options, maxAgeMs: 500 })).map((r) => [r.id, r.reason, r.error]),
      [[kept, "too old", undefined]],
    );
    assert.equal(c.service.knows(kept), false, "the core's record went with it");
    assert.deepEqual(c.driver.removed, [id(40), kept]);
    assert.equal(c.service.countOf(c.backend), 0, "its slot is free");
  });
});
