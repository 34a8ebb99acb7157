/**
 * A hostile job and a careless client on the host driver (bubblewrap): FIFOs
 * where berth reads, directories swapped for symlinks to the host while a copy
 * runs, files that grow while they are copied out. Each test reproduces an
 * attack that worked before berth went through open directories
 * (plugins/host/directory.ts).
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Status } from "nice-grpc";
import { openChannel, v1Client, v1alphaClient } from "../../src/client.js";
import { type DaemonProcess, startDaemon, startDaemonExpectingFailure } from "../support/daemon-process.js";
import { execOutput, within } from "../support/rpc.js";
import { once, readTar, tarOf } from "../support/tar.js";

describe("hostile jobs on the host driver", () => {
  let daemon: DaemonProcess;
  let channel: ReturnType<typeof openChannel>;
  let root: string;
  let victim: string;
  const v1 = () => v1Client(channel);
  const v1alpha = () => v1alphaClient(channel);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "berth-hostile-root-"));
    daemon = await startDaemon(["--backend-opt", "isolation=bwrap", "--backend-opt", `root=${root}`]);
    channel = openChannel(daemon.address);
  });
  after(async () => {
    channel.close();
    await daemon.stop();
    await rm(root, { recursive: true, force: true });
  });

  /** A host directory a job should never reach: a file of mode 600 and the directory's own mode. */
  const makeVictim = async () => {
    victim = await mkdtemp(join(tmpdir(), "berth-victim-"));
    await writeFile(join(victim, "shadow"), "host secret\n", { mode: 0o600 });
    await chmod(victim, 0o700);
    const file = await stat(join(victim, "shadow"));
    const dir = await stat(victim);
    return { fileMode: file.mode, fileMtime: file.mtimeMs, dirMode: dir.mode };
  };

  test("a FIFO in place of an env file never blocks berth: UpdateEnv and CopyOut answer, other jobs go on", async (t) => {
    const { id, layout } = await v1alpha().create({});
    t.after(() => v1alpha().remove(id));
    const other = await v1alpha().create({});
    t.after(() => v1alpha().remove(other.id));
    const fifo = `${layout!.rootPath}/envs.txt`;
    assert.equal((await execOutput(v1alpha(), id, ["mkfifo", fifo])).exitCode, 0);
    // More calls at once than libuv has worker threads (4): a blocking open would stall them all.
    const attempts = Array.from({ length: 8 }, () =>
      within(
        v1()
          .raw.updateEnv({ environmentId: id, srcPath: fifo, currentEnv: {} })
          .then(
            () => "answered",
            (err: { code?: Status; details?: string }) => `${Status[err.code ?? 0]}: ${err.details}`,
          ),
        10_000,
        "UpdateEnv of a FIFO",
      ),
    );
    for (const outcome of await Promise.all(attempts)) {
      assert.match(outcome, /^INVALID_ARGUMENT: .*envs\.txt is not a regular file/);
    }
    const copied = await within(readTar(v1alpha().copyOut(id, fifo)), 10_000, "CopyOut of a FIFO");
    assert.deepEqual(copied, [], "a FIFO is left out of a copy, as docker cp leaves it out");
    const elsewhere = await within(
      execOutput(v1alpha(), other.id, ["echo", "alive"]),
      10_000,
      "another job's Exec",
    );
    assert.equal(elsewhere.stdout, "alive\n");
  });

  test("a directory swapped for a symlink to the host while a CopyIn runs: nothing on the host is made or changed", async (t) => {
    const before = await makeVictim();
    t.after(() => rm(victim, { recursive: true, force: true }));
    const { id, layout } = await v1alpha().create({});
    t.after(() => v1alpha().remove(id));
    const base = layout!.rootPath;
    // A background process of an earlier step flips d between a directory and a symlink to the victim.
    const flip = `cd '${base}'; while :; do rm -rf d; mkdir d; rm -rf d; ln -s '${victim}' d; done`;
    const flipping = v1alpha()
      .exec(id, ["sh", "-c", flip])
      .catch(() => undefined);
    const tar = await tarOf([
      { name: "d/", type: "directory", mode: 0o777 },
      { name: "d/shadow", content: "written by a job\n", mode: 0o644 },
      { name: "d/new-file", content: "x" },
      { name: "d/sub/", type: "directory", mode: 0o755 },
    ]);
    for (let i = 0; i < 40; i++) {
      await v1alpha()
        .copyIn(id, base, once(tar))
        .catch((err: { code?: Status }) => {
          assert.ok(
            err.code === Status.PERMISSION_DENIED ||
              err.code === Status.NOT_FOUND ||
              err.code === Status.INVALID_ARGUMENT,
            `a racing CopyIn fails with a status that says why, not ${Status[err.code ?? 0]}`,
          );
        });
    }
    await v1alpha().remove(id);
    await flipping;
    assert.deepEqual((await readdir(victim)).sort(), ["shadow"], "nothing was created in the host directory");
    const file = await stat(join(victim, "shadow"));
    const dir = await stat(victim);
    assert.deepEqual(
      { fileMode: file.mode, fileMtime: file.mtimeMs, dirMode: dir.mode },
      before,
      "no mode or time of the host's files changed",
    );
  });

  test("a directory flipped to a symlink to the host while a CopyOut runs never hands out the host's file", async (t) => {
    await makeVictim();
    t.after(() => rm(victim, { recursive: true, force: true }));
    const { id, layout } = await v1alpha().create({});
    t.after(() => v1alpha().remove(id));
    const base = layout!.rootPath;
    const flip = `cd '${base}'; while :; do rm -rf d; mkdir d; echo job > d/shadow; rm -rf d; ln -s '${victim}' d; done`;
    const flipping = v1alpha()
      .exec(id, ["sh", "-c", flip])
      .catch(() => undefined);
    for (let i = 0; i < 300; i++) {
      const entries = await readTar(v1alpha().copyOut(id, `${base}/d/shadow`)).catch(() => []);
      for (const entry of entries) assert.notEqual(entry.text, "host secret\n", "the host's file came out");
    }
    await v1alpha().remove(id);
    await flipping;
  });

  test("a file that grows while it is copied out comes out as it was, not as an error", async (t) => {
    const { id, layout } = await v1alpha().create({});
    t.after(() => v1alpha().remove(id));
    const log = `${layout!.rootPath}/live.log`;
    const grow = `while :; do echo "a line of a live log" >> '${log}'; done`;
    const growing = v1alpha()
      .exec(id, ["sh", "-c", grow])
      .catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 300));
    for (let i = 0; i < 10; i++) {
      const [entry] = await readTar(v1alpha().copyOut(id, log));
      assert.equal(entry.name, "live.log");
      assert.ok(
        entry.size > 0 && entry.size % "a line of a live log\n".length === 0,
        `whole lines: ${entry.size} bytes`,
      );
    }
    await v1alpha().remove(id);
    await growing;
  });

  test("two berths on one host root keep to their own instance; a second berth of the same instance is refused", async (t) => {
    const shared = await mkdtemp(join(tmpdir(), "berth-shared-root-"));
    t.after(() => rm(shared, { recursive: true, force: true }));
    const alpha = await startDaemon(["--instance", "alpha", "--backend-opt", `root=${shared}`]);
    t.after(() => alpha.stop().then(() => undefined));
    const alphaChannel = openChannel(alpha.address);
    t.after(() => alphaChannel.close());
    const { id } = await v1alphaClient(alphaChannel).create({});
    // A reconciler that takes anything without a record for an orphan at once.
    const config = join(shared, "beta.yaml");
    await writeFile(config, "reconciler:\n  orphanGraceSeconds: 0\n  intervalSeconds: 1\n");
    const beta = await startDaemon([
      "--config",
      config,
      "--instance",
      "beta",
      "--backend-opt",
      `root=${shared}`,
    ]);
    t.after(() => beta.stop().then(() => undefined));
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const still = await execOutput(v1alphaClient(alphaChannel), id, ["echo", "mine"]);
    assert.equal(still.stdout, "mine\n", "beta's reconciler left alpha's environment alone");
    assert.deepEqual((await readdir(shared)).sort(), ["alpha", "beta", "beta.yaml"]);
    const twin = await startDaemonExpectingFailure([
      "--instance",
      "alpha",
      "--backend-opt",
      `root=${shared}`,
    ]);
    assert.notEqual(twin.code, 0);
    assert.match(twin.stderr, /another berth \(pid \d+\) uses .* as instance alpha/);
    await v1alphaClient(alphaChannel).remove(id);
  });
});
