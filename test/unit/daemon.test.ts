/**
 * A whole daemon in this process, over the labelled fake driver registered
 * as a driver named "fake": its configuration file loaded and checked by
 * the fake's own option schema, its gRPC server on a real unix socket in a
 * temporary directory, called by berth's own client. Statuses as a runner
 * sees them, and a restart on the same state directory: recorded
 * environments taken up again (or forgotten when their resources are gone),
 * and the reconciler's first pass removing what has no record. No backend,
 * no `berth serve` process.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Status } from "nice-grpc";
import { openChannel, v1Client, v1alphaClient } from "../../src/client.js";
import { ConfigError, loadConfig } from "../../src/config.js";
import { createDaemon } from "../../src/daemon.js";
import { expectCode } from "../support/rpc.js";
import { memoryLogger, until } from "./core-setup.js";
import { type FakeDriver, fakeDriverRegistry as fakeDrivers, patternBytes } from "./fake-driver.js";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "berth-daemon-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function configText(dir: string, options = "dyingMs: 10"): string {
  return [
    "listeners:",
    `  - address: unix://${dir}/berth.sock`,
    "backends:",
    "  main:",
    "    driver: fake",
    "    options:",
    `      ${options}`,
    "    limits:",
    "      rpcTimeoutSeconds:",
    "        exec: 0.1",
    `stateDir: ${dir}/state`,
    "shutdownGraceSeconds: 1",
    "reconciler:",
    "  orphanGraceSeconds: 0",
    "",
  ].join("\n");
}

/** Starts a daemon from the config file in dir; stop it with the returned stop. */
async function serve(dir: string, made?: (driver: FakeDriver) => void) {
  const drivers = fakeDrivers(made);
  const config = await loadConfig({ backendOpt: {}, listen: [], config: join(dir, "berth.yaml") }, drivers);
  const { logger, log } = memoryLogger();
  const daemon = createDaemon({ config, logger, drivers });
  await daemon.start();
  const channel = openChannel(`unix://${dir}/berth.sock`);
  return {
    daemon,
    log,
    v1alpha: v1alphaClient(channel),
    v1: v1Client(channel),
    async stop() {
      channel.close();
      await daemon.stop();
    },
  };
}

describe("the configuration of a fake backend", () => {
  test("its options are the driver's, checked by its schema with the file's line and column", async () => {
    await withDir(async (dir) => {
      const file = join(dir, "berth.yaml");
      await writeFile(file, configText(dir, "dyingMs: 25"));
      const config = await loadConfig({ backendOpt: {}, listen: [], config: file }, fakeDrivers());
      assert.deepEqual(
        config.backends.map((b) => [b.name, b.driver, b.options, b.limits.rpcTimeoutMs]),
        [["main", "fake", { dyingMs: 25 }, { exec: 100 }]],
      );
      assert.deepEqual([config.stateDir, config.reconciler.orphanGraceMs], [join(dir, "state"), 0]);

      await writeFile(file, configText(dir, "dyingMs: -1"));
      await assert.rejects(
        loadConfig({ backendOpt: {}, listen: [], config: file }, fakeDrivers()),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.problems.length === 1 &&
          /^.*berth\.yaml:7:16: backends\.main\.options\.dyingMs: /.test(err.problems[0]),
      );
      await writeFile(file, configText(dir, "dyingMS: 1"));
      await assert.rejects(
        loadConfig({ backendOpt: {}, listen: [], config: file }, fakeDrivers()),
        (err: unknown) =>
          err instanceof ConfigError &&
          /berth\.yaml:7:7: backends\.main\.options\.dyingMS: unknown option of driver fake \(known: dyingMs\)$/.test(
            err.problems[0],
          ),
      );
    });
  });
});

describe("a daemon over the fake driver, on a real socket", () => {
  test("statuses reach the runner as the core gave them; a bug is INTERNAL without its text", async () => {
    await withDir(async (dir) => {
      await writeFile(join(dir, "berth.yaml"), configText(dir));
      const berth = await serve(dir);
      try {
        const { v1alpha, v1 } = berth;
        assert.equal((await v1alpha.capabilities()).name, "main", "the backend's name");
        const { id } = await v1alpha.create({ image: "any" });
        assert.match(id, /^berth-[0-9a-f]{16}$/);
        assert.deepEqual(await v1alpha.exec(id, ["exit", "3"]), { exitCode: 3 });
        assert.deepEqual(await v1.exec(id, ["exit", "0"]), { exitCode: 0, errorMessage: undefined });
        await assert.rejects(
          v1alpha.exec("berth-0000000000000000", ["exit", "0"]),
          expectCode(Status.NOT_FOUND, /^environment berth-0000000000000000 not found/),
        );
        await assert.rejects(v1.exec(id, []), expectCode(Status.INVALID_ARGUMENT, /^command is empty/));
        await assert.rejects(
          v1alpha.exec(id, ["crash", "SECRET-in-a-bug"]),
          expectCode(
            Status.INTERNAL,
            /^internal error in berth during \/plugin\.v1alpha\.BackendPlugin\/Exec; its log has the details$/,
          ),
        );
        assert.match(berth.log(), /"level":50.*SECRET-in-a-bug/);
        await assert.rejects(
          v1alpha.exec(id, ["wait", "never"]),
          expectCode(Status.DEADLINE_EXCEEDED, /limits\.rpcTimeoutSeconds\.exec = 0\.1/),
        );
        await v1alpha.remove(id);
        await v1alpha.remove(id);
        await assert.rejects(v1.exec(id, ["exit", "0"]), expectCode(Status.NOT_FOUND));
      } finally {
        await berth.stop();
      }
    });
  });

  test("output of every size reaches the client byte for byte, on both streams and both generations", async () => {
    await withDir(async (dir) => {
      await writeFile(join(dir, "berth.yaml"), configText(dir));
      const berth = await serve(dir);
      try {
        const { id } = await berth.v1alpha.create({ image: "any" });
        const length = 3_000_000;
        for (const client of [berth.v1alpha, berth.v1]) {
          const received = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
          const outcome = await client.exec(id, ["pattern", String(length)], {
            // The client may hand out views of its receive buffer: keep copies.
            onOutput: (stream, data) => received[stream].push(Buffer.from(data)),
          });
          assert.equal(outcome.exitCode, 0);
          const stdout = Buffer.concat(received.stdout);
          const stderr = Buffer.concat(received.stderr);
          assert.equal(stdout.length, length, "stdout's length");
          assert.ok(stdout.equals(patternBytes(length, 0)), "stdout's bytes");
          assert.equal(stderr.length, length / 4, "stderr's length");
          assert.ok(stderr.equals(patternBytes(length / 4, 1)), "stderr's bytes");
        }
      } finally {
        await berth.stop();
      }
    });
  });

  test("after a restart: recorded environments are taken up or forgotten, and an unrecorded one is removed", async () => {
    await withDir(async (dir) => {
      await writeFile(join(dir, "berth.yaml"), configText(dir));
      const first = await serve(dir);
      let kept: string;
      let gone: string;
      try {
        kept = (await first.v1alpha.create({ image: "any" })).id;
        gone = (await first.v1alpha.create({ image: "any" })).id;
      } finally {
        await first.stop();
      }
      const orphan = "berth-00000000000000ff";
      let driver: FakeDriver | undefined;
      const second = await serve(dir, (made) => {
        driver = made;
        // What the backend still holds: the kept one and one berth has no record of.
        made.managed = [
          { id: kept, createdAt: new Date(), state: { fake: kept } },
          { id: orphan, createdAt: new Date(0), state: undefined },
        ];
        made.adopt = async (ref) => ref.id !== gone;
      });
      try {
        assert.deepEqual(await second.v1alpha.exec(kept, ["exit", "7"]), { exitCode: 7 });
        await assert.rejects(second.v1alpha.exec(gone, ["exit", "0"]), expectCode(Status.NOT_FOUND));
        await until(() => driver!.removed.includes(orphan), "the reconciler removed the orphan");
        assert.deepEqual(driver!.removed, [orphan], "the taken-up environment stays");
        assert.deepEqual(
          second.daemon.environments.records().map((r) => r.id),
          [kept],
        );
        assert.match(
          second.log(),
          new RegExp(`"environmentId":"${orphan}".*reconciler removed an environment`),
        );
        await second.v1alpha.remove(kept);
        assert.deepEqual(driver!.removed, [orphan, kept]);
      } finally {
        await second.stop();
      }
    });
  });
});
