/**
 * The benchmark's grpc-go client (bench/go-client) against a real daemon on
 * the host driver: if it miscounted or failed quietly, the benchmark's
 * figures would be wrong without anyone noticing. Skipped, with the reason,
 * where Go is not installed.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Channel } from "nice-grpc";
import { openChannel, type PluginClient, v1alphaClient } from "../../src/client.js";
import { buildGoClient, goCopyIn, goCopyOut, goExec, goLatency } from "../../bench/go-client.js";
import { type DaemonProcess, startDaemon } from "../support/daemon-process.js";
import { execOutput } from "../support/rpc.js";

const built = await buildGoClient();
const skip = typeof built === "string" ? false : `the Go client cannot be built: ${built.unavailable}`;
if (skip) console.log(`# skipping the Go client's tests: ${skip}`);

describe("the benchmark's Go client", { skip }, () => {
  const binary = typeof built === "string" ? built : "";
  let daemon: DaemonProcess;
  let channel: Channel;
  let client: PluginClient;
  let id: string;
  let root: string;
  let local: string;
  before(async () => {
    daemon = await startDaemon(["--backend-opt", "isolation=bwrap"]);
    channel = openChannel(daemon.address);
    client = v1alphaClient(channel);
    const created = await client.create({});
    id = created.id;
    root = created.layout!.rootPath;
    await client.start(id);
    local = await mkdtemp(join(tmpdir(), "berth-go-client-"));
  });
  after(async () => {
    await client.remove(id);
    channel.close();
    await daemon.stop();
    await rm(local, { recursive: true, force: true });
  });

  test("exec counts stdout and stderr apart and reports the exit code; workdir and env reach the command", async () => {
    const counted = await goExec(binary, daemon.address, id, [
      "sh",
      "-c",
      "head -c 3000000 /dev/zero; printf abc >&2; exit 3",
    ]);
    assert.deepEqual(
      { exitCode: counted.exitCode, stdoutBytes: counted.stdoutBytes, stderrBytes: counted.stderrBytes },
      { exitCode: 3, stdoutBytes: 3_000_000, stderrBytes: 3 },
    );
    assert.ok(counted.seconds > 0 && counted.cpuSeconds > 0);
    // Output lengths are all the client reports: "$GREETING" is 5 bytes, pwd prints the workdir and a newline.
    const placed = await goExec(binary, daemon.address, id, ["sh", "-c", 'printf %s "$GREETING"; pwd >&2'], {
      workdir: root,
      env: { GREETING: "hello" },
    });
    assert.deepEqual([placed.stdoutBytes, placed.stderrBytes], [5, Buffer.byteLength(root) + 1]);
  });

  test("exec of a program that cannot run fails with berth's ExecFailed message", async () => {
    await assert.rejects(
      goExec(binary, daemon.address, id, ["/no/such/program"]),
      /exec failed: .*\/no\/such\/program/,
    );
  });

  test("latency times each run after the warm-up, and fails when a run exits non-zero", async () => {
    const { ms } = await goLatency(binary, daemon.address, id, ["true"], { warmup: 2, n: 5 });
    assert.equal(ms.length, 5);
    assert.ok(ms.every((value) => value > 0));
    await assert.rejects(
      goLatency(binary, daemon.address, id, ["false"], { warmup: 0, n: 2 }),
      /run 1: the command exited with 1/,
    );
  });

  test("a directory copied in and out again keeps its files, bytes and links", async () => {
    const tree = join(local, "tree");
    await mkdir(join(tree, "sub", "deeper"), { recursive: true });
    const big = Buffer.alloc(5 * 1024 * 1024 + 123);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
    await writeFile(join(tree, "big.bin"), big);
    let fileBytes = big.length;
    for (let i = 1; i <= 30; i++) {
      await writeFile(join(tree, "sub", `small-${i}`), Buffer.alloc(i * 100, i));
      fileBytes += i * 100;
    }
    await writeFile(join(tree, "sub", "deeper", "empty"), "");
    await symlink("sub/small-1", join(tree, "link"));

    const sent = await goCopyIn(binary, daemon.address, id, {
      dir: tree,
      dest: `${root}/in`,
      name: "copied",
    });
    assert.ok(sent.tarBytes > fileBytes, `a tar is larger than its ${fileBytes} bytes of files`);
    // Checked inside the environment with berth's own client: the same content where the Go client put it.
    const there = await execOutput(client, id, [
      "sh",
      "-c",
      `cd ${root}/in/copied && sha256sum big.bin | cut -c1-64 && readlink link && find . -type f | wc -l`,
    ]);
    assert.equal(there.stdout, `${createHash("sha256").update(big).digest("hex")}\nsub/small-1\n32\n`);

    const fetched = await goCopyOut(binary, daemon.address, id, `${root}/in/copied`);
    assert.deepEqual({ files: fetched.files, fileBytes: fetched.fileBytes }, { files: 32, fileBytes });
    assert.ok(fetched.tarBytes > fileBytes);
  });

  test("copyout of a missing path reports the empty stream v1alpha sends for it", async () => {
    const missing = await goCopyOut(binary, daemon.address, id, `${root}/no-such-thing`);
    assert.deepEqual([missing.tarBytes, missing.files, missing.fileBytes], [0, 0, 0]);
  });

  test("a daemon that does not answer fails the health check before any call", async () => {
    await assert.rejects(
      goExec(binary, `unix://${join(local, "nobody.sock")}`, id, ["true"]),
      /health check of unix:\/\/.*nobody\.sock/,
    );
  });
});
