/**
 * A hostile job and a careless client on the host driver (bubblewrap): FIFOs
 * where berth reads, directories swapped for symlinks to the host while a copy
 * runs, files that grow while they are copied out. Each test reproduces an
 * attack that worked before berth went through open directories
 * (plugins/host/directory.ts).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { chmod, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Status } from "nice-grpc";
import { openChannel, v1Client, v1alphaClient } from "../../src/client.js";
import { type DaemonProcess, startDaemon, startDaemonExpectingFailure } from "../support/daemon-process.js";
import { countProcesses } from "../support/processes.js";
import { execOutput, within } from "../support/rpc.js";
import { bigFileTar, manyDirectoriesTar, once, readTar, tarOf } from "../support/tar.js";

const MiB = 1024 * 1024;

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
    const line = "a line of a live log\n";
    for (let i = 0; i < 10; i++) {
      const [entry] = await readTar(v1alpha().copyOut(id, log));
      assert.equal(entry.name, "live.log");
      assert.ok(entry.size > 0, "what the file held when the copy began");
      // The size can end inside a line: the kernel grows a file page by page, so a write that
      // straddles a page boundary is seen half done. The bytes are the file's, up to that size.
      const expected = line.repeat(Math.ceil(entry.size / line.length)).slice(0, entry.size);
      assert.equal(
        entry.sha256,
        createHash("sha256").update(expected).digest("hex"),
        `${entry.size} bytes of lines`,
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

  test("inside an environment berth's socket and state, berth's root and other environments show nothing, and commands have no capabilities", async (t) => {
    const { id } = await v1alpha().create({});
    t.after(() => v1alpha().remove(id));
    const other = await v1alpha().create({});
    t.after(() => v1alpha().remove(other.id));
    // The test daemon keeps its socket and its state directory in daemon.dir.
    const look = await execOutput(v1alpha(), id, [
      "sh",
      "-c",
      `ls -A '${daemon.dir}'; echo ---; ls -A '${root}'; echo ---; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status`,
    ]);
    const [sockets, berthRoot, status] = look.stdout.split("---\n");
    assert.equal(sockets, "", `berth's socket and state directory are hidden: ${sockets}`);
    assert.equal(
      berthRoot.trim().split("\n").length,
      1,
      `only this instance's mount point is there: ${berthRoot}`,
    );
    assert.match(status, /CapEff:\s+0+\n/, "no capabilities");
    assert.match(status, /NoNewPrivs:\s+1/, "and no way to gain new ones");
  });

  /** Every process an environment's command can see: "pid command line" per line. */
  const processesSeenBy = async (id: string) => {
    const listing = await execOutput(v1alpha(), id, [
      "sh",
      "-c",
      `for p in /proc/[0-9]*; do echo "\${p#/proc/} $(tr '\\0' ' ' < $p/cmdline)"; done`,
    ]);
    assert.equal(listing.exitCode, 0, listing.stderr);
    return listing.stdout;
  };
  test("each environment sees only its own processes, cannot signal another's, and keeps its background processes between steps", async (t) => {
    const a = await v1alpha().create({});
    t.after(() =>
      v1alpha()
        .remove(a.id)
        .catch(() => undefined),
    );
    const b = await v1alpha().create({});
    t.after(() => v1alpha().remove(b.id));
    const started = await execOutput(v1alpha(), a.id, ["sh", "-c", "sleep 4242 >/dev/null 2>&1 & echo $!"]);
    assert.ok(Number(started.stdout) < 100, `a PID of its own namespace, not the host's: ${started.stdout}`);

    const seenByA = await processesSeenBy(a.id);
    assert.match(seenByA, new RegExp(`^${started.stdout.trim()} sleep 4242 $`, "m"), "the next step sees it");
    const seenByB = await processesSeenBy(b.id);
    assert.doesNotMatch(seenByB, /sleep 4242/, `another environment does not: ${seenByB}`);
    assert.doesNotMatch(seenByB, /node|berth/, `nor berth: ${seenByB}`);
    assert.ok(seenByB.trim().split("\n").length < 6, `only its holder and its own command: ${seenByB}`);

    // Signals to every process it may signal, and to A's process by the PID A sees.
    const hostile = await execOutput(v1alpha(), b.id, [
      "sh",
      "-c",
      `kill -9 ${started.stdout.trim()} 1 -1; echo survived`,
    ]);
    assert.equal(hostile.stdout, "survived\n", "kill -1 spares the caller (and the namespace's PID 1)");
    assert.match(await processesSeenBy(a.id), /sleep 4242/, "A's process lives on");
    assert.equal(
      (await execOutput(v1alpha(), b.id, ["true"])).exitCode,
      0,
      "B's namespace survives its own kill -1",
    );

    await v1alpha().remove(a.id);
    assert.equal(await countProcesses(["sleep", "4242"]), 0, "Remove ends what the environment left running");
  });

  test("what an environment left running is still in its namespace after berth crashed and restarted", async (t) => {
    const state = await mkdtemp(join(tmpdir(), "berth-hostile-state-"));
    t.after(() => rm(state, { recursive: true, force: true }));
    const same = ["--backend-opt", `root=${root}`, "--state-dir", state, "--instance", "crash-test"];
    const first = await startDaemon(same);
    const firstChannel = openChannel(first.address);
    const { id } = await v1alphaClient(firstChannel).create({});
    await execOutput(v1alphaClient(firstChannel), id, ["sh", "-c", "sleep 4343 >/dev/null 2>&1 &"]);
    firstChannel.close();
    await first.stop("SIGKILL");

    const second = await startDaemon(same);
    const secondChannel = openChannel(second.address);
    t.after(async () => {
      secondChannel.close();
      await second.stop();
    });
    const after = await execOutput(v1alphaClient(secondChannel), id, [
      "sh",
      "-c",
      "cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
    ]);
    assert.match(
      after.stdout,
      /sleep 4343/,
      `the restarted berth found the environment's namespace: ${after.stdout}`,
    );
    await v1alphaClient(secondChannel).remove(id);
    assert.equal(await countProcesses(["sleep", "4343"]), 0, "and its Remove ends it");
  });

  test("four archives of 300,000 directories at once, and their Remove, keep the daemon within 256 MiB of its idle memory", async (t) => {
    // On tmpfs where there is one: the point is berth's memory, and 1.2 million directories on a disk take minutes.
    const base = (await stat("/dev/shm").catch(() => undefined))?.isDirectory() ? "/dev/shm" : tmpdir();
    const own = await mkdtemp(join(base, "berth-hostile-tiny-"));
    const small = await startDaemon(["--backend-opt", `root=${own}`, "--instance", "tiny"]);
    const smallChannel = openChannel(small.address);
    t.after(async () => {
      smallChannel.close();
      await small.stop();
      await rm(own, { recursive: true, force: true });
    });
    const client = v1alphaClient(smallChannel);
    const environments = await Promise.all([1, 2, 3, 4].map(() => client.create({})));
    const idle = (await small.memory()).current;
    const entries = 300_000;
    await Promise.all(
      environments.map(({ id, layout }) => client.copyIn(id, layout!.rootPath, manyDirectoriesTar(entries))),
    );
    const growth = async (phase: string) => {
      const { peak } = await small.memory();
      const said = `${phase}: peak RSS ${(peak / MiB).toFixed(0)} MiB, ${((peak - idle) / MiB).toFixed(0)} MiB above idle`;
      t.diagnostic(said);
      assert.ok(peak - idle <= 256 * MiB, said);
    };
    await growth("after the copies");
    for (const { id, layout } of environments) {
      const made = await execOutput(client, id, ["sh", "-c", `ls ${layout!.rootPath}/d | wc -l`]);
      assert.equal(made.stdout.trim(), String(entries), "every directory was made");
    }
    await Promise.all(environments.map(({ id }) => client.remove(id)));
    await growth("after removing them");
    assert.deepEqual(await readdir(join(own, "tiny", "envs")).catch(() => []), [], "nothing left");
  });

  test("a CopyIn that fills the disk is RESOURCE_EXHAUSTED, a tree 2,040 levels deep is copied; neither is INTERNAL", async (t) => {
    // A 2 MiB file system of its own as the root (the test runs as root, as CI does).
    const own = await mkdtemp(join(tmpdir(), "berth-hostile-full-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "berth-test-full", own]);
    const full = await startDaemon(["--backend-opt", `root=${own}`]);
    const fullChannel = openChannel(full.address);
    t.after(async () => {
      fullChannel.close();
      await full.stop();
      execFileSync("umount", [own]);
      await rm(own, { recursive: true, force: true });
    });
    const client = v1alphaClient(fullChannel);
    const { id, layout } = await client.create({});
    const big = bigFileTar("big.bin", 8 * MiB);
    await assert.rejects(
      client.copyIn(id, layout!.rootPath, big.stream),
      (err: { code?: Status; details?: string }) => {
        const errors = full
          .log()
          .split("\n")
          .filter((line) => line.includes('"level":50'));
        assert.equal(err.code, Status.RESOURCE_EXHAUSTED, `${err.details}\n${errors.join("\n")}`);
        assert.match(err.details ?? "", /big\.bin.*the disk is full \(ENOSPC\)/);
        return true;
      },
    );
    assert.equal((await execOutput(client, id, ["rm", `${layout!.rootPath}/big.bin`])).exitCode, 0);

    const deep = Array.from({ length: 2040 }, () => "a").join("/");
    await client.copyIn(id, layout!.rootPath, once(await tarOf([{ name: `${deep}/leaf`, content: "x" }])));
    // The whole tree back: its deepest entry's name is 4,084 bytes, within tar's and Linux's limits.
    const back = await readTar(client.copyOut(id, `${layout!.rootPath}/a`));
    assert.equal(back.length, 2041);
    assert.equal(back.at(-1)?.name, `${deep}/leaf`);
    await client.remove(id);
  });
});
