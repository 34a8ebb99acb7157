/**
 * Crashes and leftovers, on the real Docker engine: berth killed with
 * SIGKILL takes its environments up again from its state file; the
 * reconciler removes what carries its instance label but no record; a
 * damaged state file is moved aside; `berth gc` does the reconciler's pass
 * by hand.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { Status } from "nice-grpc";
import { openChannel, v1alphaClient } from "../../src/client.js";
import { cliPath, startDaemon } from "../support/daemon-process.js";
import { dockerTestOptions, ensureTestImages, testImages } from "../support/docker-images.js";
import { execOutput, expectCode } from "../support/rpc.js";

const docker = await dockerTestOptions();
if (!docker.skip) await ensureTestImages();

/** Names of containers and networks of an environment. */
function objectsOf(id: string): string[] {
  const list = (args: string[]) =>
    execFileSync("docker", [...args, "--filter", `label=berth.environment=${id}`, "--format", "{{.ID}}"], {
      encoding: "utf8",
    })
      .split("\n")
      .filter(Boolean);
  return [...list(["ps", "-a"]), ...list(["network", "ls"])];
}

async function eventually(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline;) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return check();
}

describe("restarts and leftovers", docker, () => {
  let dir: string;
  let stateDir: string;
  let socket: string;
  let config: string;
  const instance = `test-restart-${randomUUID().slice(0, 8)}`;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-restart-"));
    stateDir = join(dir, "state");
    socket = `unix://${dir}/berth.sock`;
    config = join(dir, "berth.yaml");
    // Reconcile every second, and anything without a record is an orphan at once.
    await writeFile(config, "reconciler:\n  intervalSeconds: 1\n  orphanGraceSeconds: 0\n");
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const serve = () =>
    startDaemon(
      ["--config", config, "--backend", "docker", "--state-dir", stateDir, "--instance", instance],
      {
        listen: [socket],
      },
    );

  test("after SIGKILL mid-Exec the runner gets an error, then the same environment works again and Remove cleans up", async () => {
    const first = await serve();
    let channel = openChannel(socket);
    const { id } = await v1alphaClient(channel).create({ image: testImages.busybox });
    await v1alphaClient(channel).start(id);
    const interrupted = v1alphaClient(channel).exec(id, ["sh", "-c", "echo started; sleep 30"], {
      onOutput: (_s, data) => {
        if (data.toString().includes("started")) first.child.kill("SIGKILL");
      },
    });
    await assert.rejects(
      interrupted,
      (err: { code?: Status }) => err.code !== undefined && err.code !== Status.OK,
    );
    channel.close();
    assert.equal(await first.stop(), null, "berth died of SIGKILL");

    const second = await serve();
    try {
      assert.match(second.log(), /environment of berth's last run taken up again/);
      channel = openChannel(socket);
      const client = v1alphaClient(channel);
      const again = await execOutput(client, id, ["sh", "-c", "echo again"]);
      assert.deepEqual([again.exitCode, again.stdout], [0, "again\n"]);
      await client.remove(id);
      assert.deepEqual(objectsOf(id), [], "Remove left no container or network");
      channel.close();
    } finally {
      await second.stop();
    }
  });

  test("the reconciler removes what has no record within a period, and keeps what it re-adopted", async () => {
    const first = await serve();
    let channel = openChannel(socket);
    const orphan = (await v1alphaClient(channel).create({ image: testImages.busybox })).id;
    const kept = (await v1alphaClient(channel).create({ image: testImages.busybox })).id;
    await v1alphaClient(channel).start(kept);
    channel.close();
    first.child.kill("SIGKILL");
    await first.stop();
    // The orphan's record is lost, as if berth died between creating it and recording it.
    const file = join(stateDir, "environments.json");
    const state = JSON.parse(await readFile(file, "utf8")) as { environments: { id: string }[] };
    state.environments = state.environments.filter((record) => record.id !== orphan);
    await writeFile(file, JSON.stringify(state));

    const second = await serve();
    try {
      assert.ok(
        await eventually(() => objectsOf(orphan).length === 0, 10_000),
        "the orphan is gone within 10 s",
      );
      assert.ok(
        await eventually(
          () =>
            new RegExp(`"environmentId":"${orphan}".*reconciler removed an environment`).test(second.log()),
          5000,
        ),
        "the removal is logged",
      );
      channel = openChannel(socket);
      const client = v1alphaClient(channel);
      assert.equal(
        (await client.exec(kept, ["true"])).exitCode,
        0,
        "the re-adopted environment stays and works",
      );
      assert.notDeepEqual(objectsOf(kept), []);
      await client.remove(kept);
      channel.close();
    } finally {
      await second.stop();
    }
  });

  test("a record from before driver state had versions is taken up; one its driver cannot read is forgotten and removed as an orphan", async () => {
    const first = await serve();
    let channel = openChannel(socket);
    const old = (await v1alphaClient(channel).create({ image: testImages.busybox })).id;
    const renamed = (await v1alphaClient(channel).create({ image: testImages.busybox })).id;
    await v1alphaClient(channel).start(old);
    channel.close();
    assert.equal(await first.stop(), 0);
    const file = join(stateDir, "environments.json");
    type Written = { id: string; stateVersion?: number; state: Record<string, unknown> };
    const state = JSON.parse(await readFile(file, "utf8")) as { environments: Written[] };
    assert.deepEqual(
      state.environments.map((record) => record.stateVersion),
      [1, 1],
      "records carry their driver's state format",
    );
    for (const record of state.environments) {
      // As berth wrote records before formats had numbers.
      delete record.stateVersion;
      // As a driver would see a field renamed by an upgrade.
      if (record.id === renamed) {
        record.state.container = record.state.containerId;
        delete record.state.containerId;
      }
    }
    await writeFile(file, JSON.stringify(state));

    const second = await serve();
    try {
      assert.match(
        second.log(),
        new RegExp(
          `"environmentId":"${renamed}".*"problem":"its driver state does not match format 1: containerId: [^"]+".*not in a format this berth reads`,
        ),
      );
      channel = openChannel(socket);
      const client = v1alphaClient(channel);
      const again = await execOutput(client, old, ["sh", "-c", "echo again"]);
      assert.deepEqual([again.exitCode, again.stdout], [0, "again\n"], "the unnumbered record is taken up");
      await assert.rejects(client.exec(renamed, ["true"]), expectCode(Status.NOT_FOUND));
      assert.ok(
        await eventually(() => objectsOf(renamed).length === 0, 10_000),
        "the unreadable record's container and network are removed as an orphan",
      );
      await client.remove(old);
      channel.close();
    } finally {
      await second.stop();
    }
  });

  test("a damaged state file is moved aside with a log line; berth starts and its environments become orphans", async () => {
    const first = await serve();
    let channel = openChannel(socket);
    const { id } = await v1alphaClient(channel).create({ image: testImages.busybox });
    channel.close();
    first.child.kill("SIGKILL");
    await first.stop();
    const file = join(stateDir, "environments.json");
    const text = await readFile(file, "utf8");
    await writeFile(file, text.slice(0, Math.floor(text.length / 2)));

    const second = await serve();
    try {
      assert.match(second.log(), /the state file is damaged: moved aside/);
      const aside = (await readdir(stateDir)).filter((name) => name.startsWith("environments.json.corrupt-"));
      assert.equal(aside.length, 1);
      channel = openChannel(socket);
      await assert.rejects(v1alphaClient(channel).exec(id, ["true"]), expectCode(Status.NOT_FOUND));
      assert.ok(
        await eventually(() => objectsOf(id).length === 0, 10_000),
        "its container is removed as an orphan",
      );
      channel.close();
    } finally {
      await second.stop();
      await rm(join(stateDir, aside(await readdir(stateDir))), { force: true });
    }
  });

  /** Serves with extra config-file lines on top of the shared reconciler settings. */
  async function serveWith(extraConfig: string) {
    const own = join(dir, `berth-${randomUUID().slice(0, 8)}.yaml`);
    await writeFile(own, `${await readFile(config, "utf8")}${extraConfig}`);
    return startDaemon(
      ["--config", own, "--backend", "docker", "--state-dir", stateDir, "--instance", instance],
      { listen: [socket] },
    );
  }

  test("SIGTERM keeps environments for the next start; with removeOnShutdown it removes them", async () => {
    const first = await serve();
    let channel = openChannel(socket);
    const { id: kept } = await v1alphaClient(channel).create({ image: testImages.busybox });
    await v1alphaClient(channel).start(kept);
    channel.close();
    assert.equal(await first.stop(), 0);
    assert.notDeepEqual(objectsOf(kept), [], "the environment outlives a clean stop");

    const second = await serveWith("removeOnShutdown: true\n");
    channel = openChannel(socket);
    const client = v1alphaClient(channel);
    assert.equal((await client.exec(kept, ["true"])).exitCode, 0, "taken up again after a clean stop");
    const { id: fresh } = await client.create({ image: testImages.busybox });
    channel.close();
    assert.equal(await second.stop(), 0);
    assert.deepEqual([...objectsOf(kept), ...objectsOf(fresh)], [], "removeOnShutdown removed both");
    const state = JSON.parse(await readFile(join(stateDir, "environments.json"), "utf8")) as {
      environments: unknown[];
    };
    assert.deepEqual(state.environments, [], "and their records");
  });

  test("an environment_timeout that passed while berth was down removes the environment at the next start", async () => {
    const first = await serve();
    let channel = openChannel(socket);
    const { id } = await v1alphaClient(channel).create({ image: testImages.busybox, timeoutMs: 3000 });
    channel.close();
    first.child.kill("SIGKILL");
    await first.stop();
    await new Promise((resolve) => setTimeout(resolve, 3500));
    const second = await serve();
    try {
      assert.ok(
        await eventually(() => objectsOf(id).length === 0, 10_000),
        "removed within 10 s of the start",
      );
      channel = openChannel(socket);
      await assert.rejects(v1alphaClient(channel).exec(id, ["true"]), expectCode(Status.NOT_FOUND));
      channel.close();
    } finally {
      await second.stop();
    }
  });

  test("the reconciler removes an environment older than reconciler.maxAgeSeconds, record or not", async () => {
    const daemon = await serveWith("  maxAgeSeconds: 3\n");
    const channel = openChannel(socket);
    try {
      const client = v1alphaClient(channel);
      const { id } = await client.create({ image: testImages.busybox });
      await client.start(id);
      assert.equal((await client.exec(id, ["true"])).exitCode, 0);
      assert.ok(await eventually(() => objectsOf(id).length === 0, 10_000), "removed within 10 s");
      await assert.rejects(client.exec(id, ["true"]), expectCode(Status.NOT_FOUND));
      assert.ok(
        await eventually(
          () => new RegExp(`"environmentId":"${id}".*"reason":"too old"`).test(daemon.log()),
          5000,
        ),
        "the removal is logged with its reason",
      );
    } finally {
      channel.close();
      await daemon.stop();
    }
  });

  test("berth gc --dry-run prints what it would remove; berth gc removes it", async () => {
    const first = await serve();
    const channel = openChannel(socket);
    const { id } = await v1alphaClient(channel).create({ image: testImages.busybox });
    channel.close();
    assert.equal(await first.stop(), 0, "a clean stop keeps the environment (and its record)");
    await rm(join(stateDir, "environments.json"));
    const gc = (...extra: string[]) =>
      promisify(execFile)(process.execPath, [
        cliPath,
        "gc",
        "--config",
        config,
        "--backend",
        "docker",
        "--state-dir",
        stateDir,
        "--instance",
        instance,
        ...extra,
      ]);
    const dry = await gc("--dry-run");
    assert.match(dry.stdout, new RegExp(`^would remove ${id} \\(backend docker, no record, created 20`, "m"));
    assert.notDeepEqual(objectsOf(id), [], "a dry run removes nothing");
    const real = await gc();
    assert.match(real.stdout, new RegExp(`^removed ${id} `, "m"));
    assert.deepEqual(objectsOf(id), []);
    assert.equal((await gc()).stdout, "nothing to remove\n");
  });
});

/** The name of the moved-aside state file in a listing. */
function aside(names: string[]): string {
  return names.find((name) => name.startsWith("environments.json.corrupt-")) ?? "none";
}
