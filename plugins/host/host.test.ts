/** What only the host driver does: isolation, CopyLocal, user, signals, background processes. */
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Status } from "nice-grpc";
import { openChannel, v1Client, v1alphaClient } from "../../src/client.js";
import {
  type DaemonProcess,
  startDaemon,
  startDaemonExpectingFailure,
} from "../../test/support/daemon-process.js";
import { countProcesses } from "../../test/support/processes.js";
import { once, tarOf } from "../../test/support/tar.js";

async function stdoutOf(
  client: ReturnType<typeof v1alphaClient>,
  id: string,
  command: string[],
): Promise<{ stdout: string; exitCode?: number; failed?: string }> {
  let stdout = "";
  const outcome = await client.exec(id, command, { onOutput: (_s, d) => (stdout += d.toString()) });
  return { stdout, ...outcome };
}

describe("host driver with bubblewrap", () => {
  let daemon: DaemonProcess;
  let root: string;
  let localRoot: string;
  let channel: ReturnType<typeof openChannel>;
  let client: ReturnType<typeof v1alphaClient>;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "berth-host-root-"));
    localRoot = await mkdtemp(join(tmpdir(), "berth-local-"));
    await mkdir(join(localRoot, "action"));
    await writeFile(join(localRoot, "action", "action.yml"), "name: local action\n");
    daemon = await startDaemon([
      "--instance",
      "host-test",
      "--backend-opt",
      `root=${root}`,
      "--backend-opt",
      "isolation=bwrap",
      "--backend-opt",
      `allowedLocalRoots=${localRoot}`,
    ]);
    channel = openChannel(daemon.address);
    client = v1alphaClient(channel);
  });
  after(async () => {
    channel.close();
    await daemon.stop();
    await rm(root, { recursive: true, force: true });
    await rm(localRoot, { recursive: true, force: true });
  });

  test("every environment sees its own files at the same path, and not the others'", async () => {
    const a = await client.create({});
    const b = await client.create({});
    try {
      assert.equal(a.layout?.rootPath, b.layout?.rootPath, "one layout for all, as plugin.v1 needs");
      const rootPath = a.layout!.rootPath;
      await client.copyIn(a.id, rootPath, once(await tarOf([{ name: "mine", content: "a" }])));
      await client.copyIn(b.id, rootPath, once(await tarOf([{ name: "mine", content: "b" }])));
      assert.equal((await stdoutOf(client, a.id, ["cat", `${rootPath}/mine`])).stdout, "a");
      assert.equal((await stdoutOf(client, b.id, ["cat", `${rootPath}/mine`])).stdout, "b");
      const others = await stdoutOf(client, a.id, ["ls", "-A", root, join(root, "host-test")]);
      assert.equal(
        others.stdout,
        `${root}:\nhost-test\n\n${join(root, "host-test")}:\nenv\n`,
        "berth's root shows only this environment's mount point: other environments are hidden",
      );
    } finally {
      await client.remove(a.id);
      await client.remove(b.id);
    }
  });

  test("CopyLocal copies from allowedLocalRoots and nowhere else", async () => {
    const v1 = v1Client(channel);
    const { rootPath } = await v1.raw.capabilities({});
    assert.equal((await v1.raw.capabilities({})).supportsLocalCopy, true);
    const { id } = await v1.create({});
    try {
      await v1.raw.copyLocal({
        environmentId: id,
        srcPath: join(localRoot, "action"),
        destPath: `${rootPath}/act/action`,
      });
      assert.equal(
        (await stdoutOf(client, id, ["cat", `${rootPath}/act/action/action.yml`])).stdout,
        "name: local action\n",
      );
      await assert.rejects(
        v1.raw.copyLocal({ environmentId: id, srcPath: "/etc", destPath: `${rootPath}/etc` }),
        (err: { code: Status; details: string }) =>
          err.code === Status.PERMISSION_DENIED &&
          /outside the host driver's allowedLocalRoots/.test(err.details),
      );
    } finally {
      await v1.remove(id);
    }
  });

  test("paths outside the environment are refused in RPCs", async () => {
    const { id } = await client.create({});
    try {
      await assert.rejects(
        client.copyIn(id, "/etc", once(await tarOf([{ name: "x", content: "x" }]))),
        (err: { code: Status }) => err.code === Status.INVALID_ARGUMENT,
      );
      await assert.rejects(
        client.exec(id, ["true"], { workdir: "/" }),
        (err: { code: Status }) => err.code === Status.INVALID_ARGUMENT,
      );
    } finally {
      await client.remove(id);
    }
  });

  test("a command killed by a signal reports 128+n (bwrap passes on the number, not the name)", async () => {
    const { id } = await client.create({});
    try {
      assert.equal((await client.exec(id, ["sh", "-c", "kill -9 $$"])).exitCode, 137);
    } finally {
      await client.remove(id);
    }
  });

  test("a command's own 'bwrap: ' on stderr is its output: passed on, exit code kept, run once", async () => {
    const { id, layout } = await client.create({});
    try {
      let stderr = "";
      const ran = `${layout!.rootPath}/ran`;
      const outcome = await client.exec(
        id,
        ["sh", "-c", `echo x >> ${ran}; echo 'bwrap: not bwrap' >&2; exit 1`],
        {
          onOutput: (stream, data) => {
            if (stream === "stderr") stderr += data.toString();
          },
        },
      );
      assert.equal(outcome.exitCode, 1);
      assert.equal(stderr, "bwrap: not bwrap\n");
      assert.equal((await stdoutOf(client, id, ["cat", ran])).stdout, "x\n", "not retried");
    } finally {
      await client.remove(id);
    }
  });

  test("running as another user is refused, not silently ignored", async () => {
    const { id } = await client.create({});
    try {
      const outcome = await client.exec(id, ["id"], { user: "nobody" });
      assert.match(outcome.failed ?? "", /cannot run them as "nobody"/);
    } finally {
      await client.remove(id);
    }
  });

  test("a background process started by one step lives on to the next, and Remove ends it", async () => {
    const { id } = await client.create({});
    let removed = false;
    try {
      // One holds the step's output open, one is a daemon that detached from everything.
      const started = await stdoutOf(client, id, [
        "sh",
        "-c",
        "sleep 1002.731 & setsid sh -c 'sleep 1002.731 & exit' </dev/null >/dev/null 2>&1; echo started",
      ]);
      assert.equal(started.stdout, "started\n");
      const count = [
        "sh",
        "-c",
        'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " 2>/dev/null < $f; echo; done | grep -c "sleep 1002[.]731" || true',
      ];
      assert.equal(
        (await stdoutOf(client, id, count)).stdout.trim(),
        "2",
        "both background processes still run",
      );
      await client.remove(id);
      removed = true;
      // Looked for on the host: another environment would not see them even if they lived.
      assert.equal(await countProcesses(["sleep", "1002.731"]), 0, "Remove killed them");
    } finally {
      if (!removed) await client.remove(id);
    }
  });

  test("a file whose name is not UTF-8 fails a CopyOut naming it, instead of being left out", async () => {
    const { id, layout } = await client.create({});
    try {
      const made = await stdoutOf(client, id, [
        "sh",
        "-c",
        `mkdir -p ${layout!.rootPath}/d && touch ${layout!.rootPath}/d/ok "${layout!.rootPath}/d/$(printf 'caf\\351')"`,
      ]);
      assert.equal(made.exitCode, 0);
      await assert.rejects(
        async () => {
          for await (const chunk of client.copyOut(id, `${layout!.rootPath}/d`)) void chunk;
        },
        (err: { code?: Status; details?: string }) =>
          err.code === Status.FAILED_PRECONDITION &&
          /d\/caf\uFFFD has a name that is not valid UTF-8/.test(err.details ?? ""),
      );
    } finally {
      await client.remove(id);
    }
  });

  test("what the host driver cannot do is refused at Create and leaves nothing behind", async () => {
    const before = await readdir(join(root, "host-test", "envs"));
    await assert.rejects(
      client.create({ services: [{ name: "db", image: "postgres" }] }),
      /cannot run service containers/,
    );
    assert.deepEqual(await readdir(join(root, "host-test", "envs")), before);
  });
});

describe("host driver without bubblewrap", () => {
  test("serves plugin.v1alpha with real paths, names signals, and explains why plugin.v1 is unavailable", async () => {
    const root = await mkdtemp(join(tmpdir(), "berth-host-root-"));
    const daemon = await startDaemon([
      "--instance",
      "plain",
      "--backend-opt",
      `root=${root}`,
      "--backend-opt",
      "isolation=none",
    ]);
    const channel = openChannel(daemon.address);
    try {
      const client = v1alphaClient(channel);
      const { id, layout } = await client.create({});
      assert.equal(layout?.rootPath, join(root, "plain", "envs", id, "root"));
      assert.equal((await stdoutOf(client, id, ["pwd"])).stdout, `${layout?.rootPath}\n`);
      let stderr = "";
      const killed = await client.exec(id, ["sh", "-c", "kill -9 $$"], {
        onOutput: (stream, data) => (stderr += stream === "stderr" ? data.toString() : ""),
      });
      assert.equal(killed.exitCode, 137);
      assert.match(stderr, /killed by SIGKILL/, "without bwrap in between, the signal is named");
      // The runner's job directory cannot be private without a mount namespace: refused, not shared.
      await assert.rejects(
        client.exec(id, ["pwd"], { workdir: "/workspace/acme/widget" }),
        (err: { code: Status; details: string }) =>
          err.code === Status.FAILED_PRECONDITION &&
          /under \/workspace, which each environment has a private copy of only with bubblewrap/.test(
            err.details,
          ),
      );
      await client.remove(id);
      await assert.rejects(
        v1Client(channel).raw.capabilities({}),
        (err: { code: Status; details: string }) =>
          err.code === Status.FAILED_PRECONDITION && /install bubblewrap/.test(err.details),
      );
    } finally {
      channel.close();
      await daemon.stop();
      await rm(root, { recursive: true, force: true });
    }
  });

  test("an unknown --backend-opt stops startup with the option and the known ones named", async () => {
    const { code, stderr } = await startDaemonExpectingFailure(["--backend-opt", "rooot=/tmp/x"]);
    assert.notEqual(code, 0);
    assert.match(
      stderr,
      /--backend-opt rooot: unknown option of driver host \(known: root, isolation, privateDirs, allowedLocalRoots, keepCapabilities, killGraceMs\)/,
    );
  });
});
