/**
 * The protocol behaviour every backend must show, written once and run for
 * each driver and each protocol generation, through a real `berth serve`
 * process on a real unix socket.
 */
import assert from "node:assert/strict";
import { readFile, readdir } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { Status } from "nice-grpc";
import { type Generation, type PluginClient, openChannel, v1Client, v1alphaClient } from "../src/client.js";
import { parseEnvFile } from "../src/env-file.js";
import { type DaemonProcess, startDaemon } from "./support/daemon-process.js";
import { processGone } from "./support/processes.js";
import { within } from "./support/rpc.js";
import { bigFileTar, once, readTar, tarOf } from "./support/tar.js";

export interface ConformanceTarget {
  /** Shown in test names. */
  driver: string;
  /** Arguments for `berth serve` that select and configure the driver. */
  serveArgs: string[];
  /** Image for job environments (drivers without images ignore it). */
  image: string;
  generations: Generation[];
  /** Bytes for the big output and copy tests (the acceptance floor is 256 MiB). */
  bigBytes?: number;
  /** Why the suite cannot run here (e.g. no Docker engine), or false. */
  skip?: string | false;
}

const MiB = 1024 * 1024;

/**
 * How much the daemon's peak RSS may exceed its RSS before a big output or
 * copy. A daemon that held the data would grow by all of it; one that streams
 * grows by the garbage V8 lets pile up before it collects (it lets about
 * 64 MiB of released buffers accumulate outside its heap). Measured for
 * 256 MiB on the 2-core machine: 67-107 MiB (host, docker, kubernetes), the
 * same for 1 GiB.
 */
const memoryBudget = 128 * MiB;

type Clients = {
  client: PluginClient;
  v1?: ReturnType<typeof v1Client>;
  v1alpha?: ReturnType<typeof v1alphaClient>;
};

interface RunResult {
  exitCode?: number;
  errorMessage?: string;
  failed?: string;
  stdout: string;
  stderr: string;
  /** Output chunks in arrival order, tagged by stream. */
  order: string[];
}

async function run(
  client: PluginClient,
  id: string,
  command: string[],
  options: { env?: Record<string, string>; workdir?: string } = {},
): Promise<RunResult> {
  let stdout = "";
  let stderr = "";
  const order: string[] = [];
  const outcome = await client.exec(id, command, {
    ...options,
    onOutput: (stream, data) => {
      const text = data.toString();
      if (stream === "stdout") stdout += text;
      else stderr += text;
      for (const line of text.split("\n").filter(Boolean)) order.push(`${stream}:${line}`);
    },
  });
  return { ...outcome, stdout, stderr, order };
}

async function expectStatus(promise: Promise<unknown>, code: Status, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: { code?: number; details?: string; message?: string }) => {
    assert.equal(err.code, code, `expected ${Status[code]}, got ${err.code} ${err.message}`);
    if (pattern) assert.match(err.details ?? "", pattern);
    return true;
  });
}

/** Polls until check() is true or timeoutMs passes; the acceptance criteria are stated with deadlines. */
async function eventually(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Whether a process on this machine has exactly this command line. */
async function processWith(commandLine: string): Promise<boolean> {
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(processGone);
    if (cmdline.split("\0").filter(Boolean).join(" ") === commandLine) return true;
  }
  return false;
}

export function conformanceSuite(target: ConformanceTarget): void {
  const bigBytes = target.bigBytes ?? 256 * MiB;
  for (const generation of target.generations) {
    describe(
      `conformance: ${target.driver} driver over plugin.${generation}`,
      { skip: target.skip ?? false },
      () => {
        let daemon: DaemonProcess;
        let clients: Clients;
        let channel: ReturnType<typeof openChannel>;
        let rootPath: string;
        let actPath: string;

        const client = () => clients.client;

        /** A created and started environment; removed when the test ends. */
        async function environment(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
          const { id, layout } = await client().create({ image: target.image });
          t.after(() => client().remove(id));
          if (layout) {
            rootPath = layout.rootPath;
            actPath = layout.actPath;
          }
          await client().start(id);
          return id;
        }

        before(async () => {
          daemon = await startDaemon(target.serveArgs);
          channel = openChannel(daemon.address);
          const v1 = v1Client(channel);
          const v1alpha = v1alphaClient(channel);
          clients = generation === "v1" ? { client: v1, v1 } : { client: v1alpha, v1alpha };
          if (generation === "v1") {
            const caps = await v1.raw.capabilities({});
            rootPath = caps.rootPath;
            actPath = caps.actPath;
          }
        });

        after(async () => {
          channel.close();
          assert.equal(await daemon.stop(), 0, `berth serve did not exit cleanly:\n${daemon.log()}`);
        });

        test("Capabilities names the backend and tells the truth about it", async () => {
          const caps = await client().capabilities();
          assert.equal(caps.name, target.driver);
          if (generation === "v1") {
            const raw = await clients.v1!.raw.capabilities({});
            assert.ok(raw.rootPath.startsWith("/"), "root_path is absolute");
            assert.ok(raw.actPath.startsWith("/"), "act_path is absolute");
            assert.equal(raw.supportsDockerActions, false);
            assert.equal(raw.protocolVersion, 1);
            assert.ok(raw.runnerContext.os && raw.runnerContext.arch, "runner_context has os and arch");
          }
        });

        test("Create reports the layout; Start completes with the image env", async (t) => {
          const { id, layout } = await client().create({ image: target.image });
          t.after(() => client().remove(id));
          if (generation === "v1alpha") {
            assert.ok(layout?.rootPath.startsWith("/"));
            assert.ok(layout?.actPath.startsWith("/"));
            assert.match(layout?.os ?? "", /^(Linux|macOS|Windows)$/);
            assert.match(layout?.arch ?? "", /^(X64|ARM64|ARM|X86)$/);
          }
          const progress: string[] = [];
          const imageEnv = await client().start(id, (line) => progress.push(line));
          assert.ok("PATH" in imageEnv, `image env has PATH: ${JSON.stringify(imageEnv)}`);
          if (generation === "v1alpha")
            assert.ok(progress.length > 0, "v1alpha Start streams progress lines");
        });

        test("Exec returns exit codes and keeps stdout and stderr apart, in order", async (t) => {
          const id = await environment(t);
          assert.equal((await run(client(), id, ["sh", "-c", "exit 0"])).exitCode, 0);
          assert.equal((await run(client(), id, ["sh", "-c", "exit 3"])).exitCode, 3);
          assert.equal((await run(client(), id, ["sh", "-c", "exit 255"])).exitCode, 255);
          await expectStatus(client().exec(id, []), Status.INVALID_ARGUMENT, /command is empty/);
          const result = await run(client(), id, [
            "sh",
            "-c",
            "echo out1; sleep 0.2; echo err1 >&2; sleep 0.2; echo out2",
          ]);
          assert.equal(result.exitCode, 0);
          assert.equal(result.stdout, "out1\nout2\n");
          assert.equal(result.stderr, "err1\n");
          assert.deepEqual(result.order, ["stdout:out1", "stderr:err1", "stdout:out2"]);
        });

        test("a command killed by a signal ends with 128+n and the signal named; a plain exit has no note", async (t) => {
          const id = await environment(t);
          const killed = await run(client(), id, ["sh", "-c", "kill -TERM $$"]);
          assert.equal(killed.exitCode, 143);
          // v1 carries the reason in done.error_message; v1alpha's ExecComplete has no message field.
          const note = generation === "v1" ? killed.errorMessage : killed.stderr;
          assert.match(note ?? "", /killed by SIGTERM \(exit code 143 = 128\+15\)/);
          const plain = await run(client(), id, ["sh", "-c", "exit 3"]);
          assert.equal(plain.exitCode, 3);
          assert.equal(plain.errorMessage ?? "", "");
          assert.equal(plain.stderr, "");
        });

        test("Exec passes env and workdir, and argv without a shell", async (t) => {
          const id = await environment(t);
          await client().copyIn(
            id,
            `${rootPath}/sub dir`,
            once(await tarOf([{ name: "marker", content: "m" }])),
          );
          const result = await run(client(), id, ["sh", "-c", 'printf "%s|" "$FOO" "$WITH_DASH_OK"; pwd'], {
            env: { FOO: "bar baz", WITH_DASH_OK: "x=y" },
            workdir: `${rootPath}/sub dir`,
          });
          assert.equal(result.stdout, `bar baz|x=y|${rootPath}/sub dir\n`);
          const literal = await run(client(), id, ["echo", "$HOME", "*", "a;b"]);
          assert.equal(literal.stdout, "$HOME * a;b\n", "arguments reach the program unexpanded");
        });

        test("a script copied under act_path runs by its absolute path", async (t) => {
          const id = await environment(t);
          const script = '#!/bin/sh\nset -e\necho "script ran with $1"\nexit 7\n';
          await client().copyIn(
            id,
            `${actPath}/steps`,
            once(await tarOf([{ name: "step.sh", content: script, mode: 0o755 }])),
          );
          const viaSh = await run(client(), id, ["sh", "-e", `${actPath}/steps/step.sh`, "sh"]);
          assert.equal(viaSh.stdout, "script ran with sh\n");
          assert.equal(viaSh.exitCode, 7);
          const direct = await run(client(), id, [`${actPath}/steps/step.sh`, "direct"]);
          assert.equal(direct.stdout, "script ran with direct\n");
          assert.equal(direct.exitCode, 7);
        });

        test("a missing program ends the Exec with a message naming it", async (t) => {
          const id = await environment(t);
          const result = await run(client(), id, ["no-such-program-4711", "x"]);
          if (generation === "v1alpha") {
            assert.match(result.failed ?? "", /no-such-program-4711/);
          } else {
            assert.notEqual(result.exitCode, 0);
            assert.match(result.errorMessage ?? "", /no-such-program-4711/);
          }
          assert.equal((await run(client(), id, ["true"])).exitCode, 0, "the environment still works");
        });

        test("output streams live and cancelling kills the whole process tree", async (t) => {
          const id = await environment(t);
          const cancel = new AbortController();
          // The first line can only arrive while the command still runs if output is streamed live:
          // the command never ends by itself.
          const exec = client().exec(
            id,
            ["sh", "-c", "echo started; sleep 1001.137 & sleep 1001.137 & wait"],
            {
              signal: cancel.signal,
              onOutput: (_stream, data) => {
                if (data.toString().includes("started")) cancel.abort();
              },
            },
          );
          await assert.rejects(exec, { name: "AbortError" });
          const countSleeps = [
            "sh",
            "-c",
            'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " 2>/dev/null < $f; echo; done | grep -c "sleep 1001[.]137" || true',
          ];
          const gone = await eventually(
            async () => (await run(client(), id, countSleeps)).stdout.trim() === "0",
            5000,
          );
          assert.ok(gone, "no sleep process is left 5 s after the cancel");
          assert.equal(
            (await run(client(), id, ["sh", "-c", "echo next"])).stdout,
            "next\n",
            "the next command runs",
          );
        });

        test("Remove right after cancelling an Exec that ignores SIGTERM waits for it and leaves no process", async () => {
          const { id } = await client().create({ image: target.image });
          await client().start(id);
          const cancel = new AbortController();
          // Every backend here runs on this machine: its processes show in this /proc too.
          const mark = `1001.${process.pid}${Date.now() % 1000}`;
          const exec = client().exec(
            id,
            ["sh", "-c", `trap "" TERM; echo started; sleep ${mark}; echo survived`],
            {
              signal: cancel.signal,
              onOutput: (_stream, data) => {
                if (data.toString().includes("started")) cancel.abort();
              },
            },
          );
          await assert.rejects(exec, { name: "AbortError" });
          // The command is still being killed (SIGTERM is ignored, SIGKILL follows after the grace).
          await client().remove(id);
          await expectStatus(client().exec(id, ["true"]), Status.NOT_FOUND);
          const left = await eventually(async () => !(await processWith(`sleep ${mark}`)), 5000);
          assert.ok(left, `no "sleep ${mark}" is left 5 s after the Remove`);
        });

        test(`a ${bigBytes / MiB} MiB output arrives whole, in bounded daemon memory`, async (t) => {
          const id = await environment(t);
          const before = await daemon.memory();
          let received = 0;
          const outcome = await client().exec(id, ["head", "-c", String(bigBytes), "/dev/zero"], {
            onOutput: (_stream, data) => (received += data.length),
          });
          assert.equal(outcome.exitCode, 0);
          assert.equal(received, bigBytes);
          const { peak } = await daemon.memory();
          const growth = `daemon memory grew by ${((peak - before.current) / MiB).toFixed(1)} MiB`;
          t.diagnostic(growth);
          assert.ok(peak - before.current < memoryBudget, growth);
        });

        test(`a ${bigBytes / MiB} MiB CopyIn and CopyOut round trip keeps the content, in bounded daemon memory`, async (t) => {
          const id = await environment(t);
          const before = await daemon.memory();
          const big = bigFileTar("big.bin", bigBytes);
          await client().copyIn(id, `${rootPath}/big`, big.stream);
          const entries = await readTar(client().copyOut(id, `${rootPath}/big/big.bin`));
          assert.deepEqual(
            entries.map((e) => [e.name, e.size, e.sha256]),
            [["big.bin", bigBytes, await big.sha256]],
          );
          const { peak } = await daemon.memory();
          const growth = `daemon memory grew by ${((peak - before.current) / MiB).toFixed(1)} MiB`;
          t.diagnostic(growth);
          assert.ok(peak - before.current < memoryBudget, growth);
        });

        test("CopyIn then CopyOut preserves the tree, modes and symlinks, named as docker cp names them", async (t) => {
          const id = await environment(t);
          const tar = await tarOf([
            { name: "tree/", type: "directory", mode: 0o750 },
            { name: "tree/run.sh", content: "#!/bin/sh\necho hi\n", mode: 0o755 },
            { name: "tree/secret", content: "s3cret", mode: 0o600 },
            { name: "tree/sub/", type: "directory" },
            { name: "tree/sub/data.txt", content: "data" },
            { name: "tree/link", type: "symlink", linkname: "sub/data.txt" },
            { name: "tree/abs-link", type: "symlink", linkname: "/usr/bin/env" },
          ]);
          await client().copyIn(id, `${rootPath}/copy`, once(tar));
          const out = await readTar(client().copyOut(id, `${rootPath}/copy/tree`));
          const byName = new Map(out.map((e) => [e.name.replace(/\/$/, ""), e]));
          assert.deepEqual([...byName.keys()].sort(), [
            "tree",
            "tree/abs-link",
            "tree/link",
            "tree/run.sh",
            "tree/secret",
            "tree/sub",
            "tree/sub/data.txt",
          ]);
          assert.equal(byName.get("tree")?.mode, 0o750);
          assert.equal(byName.get("tree/run.sh")?.mode, 0o755);
          assert.equal(byName.get("tree/secret")?.mode, 0o600);
          assert.equal(byName.get("tree/secret")?.text, "s3cret");
          assert.equal(byName.get("tree/link")?.type, "symlink");
          assert.equal(byName.get("tree/link")?.linkname, "sub/data.txt");
          assert.equal(byName.get("tree/abs-link")?.linkname, "/usr/bin/env");
          const single = await readTar(client().copyOut(id, `${rootPath}/copy/tree/sub/data.txt`));
          assert.deepEqual(
            single.map((e) => [e.name, e.text]),
            [["data.txt", "data"]],
          );
          assert.equal(
            (await run(client(), id, [`${rootPath}/copy/tree/run.sh`])).stdout,
            "hi\n",
            "the copied script is executable",
          );
        });

        if (generation === "v1") {
          test("CopyOut of a missing path is NOT_FOUND", async (t) => {
            const id = await environment(t);
            await expectStatus(
              readTar(client().copyOut(id, `${rootPath}/no/such/file`)),
              Status.NOT_FOUND,
              /no\/such\/file/,
            );
          });
        } else {
          test("CopyOut of a missing path is an empty stream, as the runner's Docker backend ignores a missing env file", async (t) => {
            const id = await environment(t);
            const chunks: Buffer[] = [];
            for await (const chunk of client().copyOut(id, `${rootPath}/no/such/file`)) chunks.push(chunk);
            assert.equal(Buffer.concat(chunks).length, 0, "no bytes: not even an empty tar");
            await client().copyIn(id, `${rootPath}/empty`, once(await tarOf([])));
            const empty = await readTar(client().copyOut(id, `${rootPath}/empty`));
            assert.deepEqual(
              empty.map((entry) => entry.name.replace(/\/$/, "")),
              ["empty"],
              "an empty directory is one entry, so the two are told apart",
            );
          });
        }

        test("a CopyOut its reader cancels mid-stream leaves nothing running, and the next call works", async (t) => {
          const id = await environment(t);
          const big = `${rootPath}/cancelled-copy`;
          const made = await run(client(), id, ["sh", "-c", `head -c 8388608 /dev/zero > '${big}'`]);
          assert.equal(made.exitCode, 0, made.stderr);
          const cancel = new AbortController();
          let received = 0;
          await assert.rejects(async () => {
            for await (const chunk of client().copyOut(id, big, cancel.signal)) {
              received += chunk.length;
              cancel.abort();
            }
          }, /abort/i);
          assert.ok(received > 0 && received < 8388608, `cancelled mid-stream (${received} bytes read)`);
          // A helper of the copy (Kubernetes runs tar in the container) must not wait for good.
          const count = ["sh", "-c", "ps -o args | grep -c '^tar -c' || true"];
          const deadline = Date.now() + 15_000;
          let left = "";
          while (left !== "0" && Date.now() < deadline) left = (await run(client(), id, count)).stdout.trim();
          assert.equal(left, "0", "no copy helper is left running");
          assert.equal((await run(client(), id, ["echo", "next"])).stdout, "next\n");
        });

        test("an Exec whose output the client stops reading, then cancels, leaves the environment answering", async (t) => {
          const id = await environment(t);
          const raw = generation === "v1" ? clients.v1!.raw : clients.v1alpha!.raw;
          const cancel = new AbortController();
          const calls = raw.exec(
            {
              environmentId: id,
              command: ["sh", "-c", "head -c 67108864 /dev/zero"],
              env: {},
              user: "",
              workdir: "",
            },
            { signal: cancel.signal },
          );
          const stream = calls[Symbol.asyncIterator]();
          await stream.next(); // one message, then nothing read: the output backs up
          await new Promise((resolve) => setTimeout(resolve, 2000));
          cancel.abort();
          await stream.next().catch(() => undefined);
          const echo = await within(run(client(), id, ["echo", "still here"]), 20_000, "the next Exec");
          assert.equal(echo.stdout, "still here\n");
          if (generation === "v1")
            await within(clients.v1!.raw.isHealthy({ environmentId: id }), 20_000, "IsHealthy");
          await within(client().remove(id), 20_000, "Remove");
        });

        test("a CopyIn whose client stops sending does not hold up Remove", async () => {
          const { id } = await client().create({ image: target.image });
          await client().start(id);
          const raw = generation === "v1" ? clients.v1!.raw : clients.v1alpha!.raw;
          let release!: () => void;
          const never = new Promise<void>((resolve) => (release = resolve));
          async function* stalled() {
            yield { environmentId: id, destPath: `${rootPath}/stalled`, data: Buffer.alloc(0) };
            await never;
          }
          const copying = raw.copyIn(stalled()).then(
            () => "finished",
            (err: { code?: Status }) => Status[err.code ?? 0],
          );
          await new Promise((resolve) => setTimeout(resolve, 500));
          try {
            await within(client().remove(id), 20_000, "Remove during a stalled CopyIn");
            assert.match(await within(copying, 20_000, "the stalled CopyIn"), /ABORTED|NOT_FOUND|CANCELLED/);
          } finally {
            release();
          }
        });

        test("calls on one environment overlap: an Exec runs while another waits for it", async (t) => {
          const id = await environment(t);
          const flag = `${rootPath}/overlap-flag`;
          let started!: () => void;
          const running = new Promise<void>((resolve) => (started = resolve));
          const waiting = client().exec(
            id,
            ["sh", "-c", `echo waiting; while [ ! -e '${flag}' ]; do sleep 0.1; done; echo released`],
            { onOutput: (_stream, data) => data.toString().includes("waiting") && started() },
          );
          await running;
          if (generation === "v1") {
            const healthy = await clients.v1!.raw.isHealthy({ environmentId: id });
            assert.equal(healthy.wait, undefined, "IsHealthy answers during an Exec");
          }
          assert.equal((await run(client(), id, ["touch", flag])).exitCode, 0);
          assert.equal((await waiting).exitCode, 0, "the first Exec ended because the second ran");
        });

        test("Exec creates a missing working directory; one that cannot be made fails the Exec naming it", async (t) => {
          const id = await environment(t);
          const made = await run(client(), id, ["pwd"], { workdir: `${rootPath}/made/on/demand` });
          assert.deepEqual([made.exitCode, made.stdout], [0, `${rootPath}/made/on/demand\n`]);
          await client().copyIn(id, rootPath, once(await tarOf([{ name: "a-file", content: "x" }])));
          const blocked = await run(client(), id, ["pwd"], { workdir: `${rootPath}/a-file/sub` });
          assert.ok(blocked.exitCode !== 0, "no command ran");
          assert.match(
            (generation === "v1" ? blocked.errorMessage : blocked.failed) ?? blocked.stderr,
            /a-file\/sub/,
          );
        });

        test("hostile tars are refused with INVALID_ARGUMENT and write nothing outside the destination", async (t) => {
          const id = await environment(t);
          const base = `${rootPath}/hostile`;
          await client().copyIn(
            id,
            base,
            once(
              await tarOf([
                { name: "secret", content: "keep" },
                { name: "outside/", type: "directory" },
              ]),
            ),
          );
          const hostile: [string, Parameters<typeof tarOf>[0]][] = [
            ["../x", [{ name: "../x", content: "bad" }]],
            ["/x", [{ name: "/x", content: "bad" }]],
            ["a/../../x", [{ name: "a/../../x", content: "bad" }]],
            [
              "symlink then write through it",
              [
                { name: "a", type: "symlink", linkname: `${base}/outside` },
                { name: "a/x", content: "bad" },
              ],
            ],
            ["hardlink to a file outside", [{ name: "h", type: "link", linkname: "../secret" }]],
          ];
          for (const [label, entries] of hostile) {
            await expectStatus(
              client().copyIn(id, `${base}/dest`, once(await tarOf(entries))),
              Status.INVALID_ARGUMENT,
              /refused|outside|escape/i,
            );
            const check = await run(client(), id, [
              "sh",
              "-c",
              `ls -A ${base}/outside; test ! -e ${base}/x && test ! -e /x && echo clean`,
            ]);
            assert.equal(check.stdout, "clean\n", `after ${label}: nothing written outside`);
          }
          assert.equal(
            (await run(client(), id, ["cat", `${base}/secret`])).stdout,
            "keep",
            "the daemon keeps serving",
          );
        });

        test("an env file with NAME=value lines and heredoc blocks is read as the runner reads it", async (t) => {
          const id = await environment(t);
          const content = "PLAIN=value with = sign\r\nMULTI<<EOF_X\nline one\nline two\nEOF_X\nEMPTY=\n";
          await client().copyIn(
            id,
            `${rootPath}/files`,
            once(await tarOf([{ name: "github_env", content }])),
          );
          const expected = { PLAIN: "value with = sign", MULTI: "line one\nline two", EMPTY: "" };
          if (generation === "v1") {
            const { updatedEnv } = await clients.v1!.raw.updateEnv({
              environmentId: id,
              srcPath: `${rootPath}/files/github_env`,
              currentEnv: { KEEP: "1", PLAIN: "old" },
            });
            assert.deepEqual(updatedEnv, { KEEP: "1", ...expected });
            const missing = await clients.v1!.raw.updateEnv({
              environmentId: id,
              srcPath: `${rootPath}/files/none`,
              currentEnv: { KEEP: "1" },
            });
            assert.deepEqual(missing.updatedEnv, { KEEP: "1" }, "a missing file leaves current_env as it is");
          } else {
            const [entry] = await readTar(client().copyOut(id, `${rootPath}/files/github_env`));
            assert.deepEqual(parseEnvFile(entry.text ?? ""), expected);
          }
        });

        test("backend_options: what runners add is taken, a key the driver does not know is ignored with a warning", async (t) => {
          const backendOptions = {
            label_arg: target.image,
            job_timeout: "2h59m59.9s",
            not_a_berth_option: "1",
          };
          const { id } = await client().create({ image: target.image, backendOptions });
          t.after(() => client().remove(id));
          const progress: string[] = [];
          await client().start(id, (line) => progress.push(line));
          assert.equal((await run(client(), id, ["true"])).exitCode, 0);
          assert.match(
            daemon.log(),
            /"ignored":\["not_a_berth_option"\].*backend_options the driver does not know are ignored/,
          );
          assert.doesNotMatch(daemon.log(), /"ignored":\[[^\]]*(label_arg|job_timeout)/);
          if (generation === "v1alpha") {
            assert.ok(
              progress.some((line) => /ignoring backend_options .* not_a_berth_option/.test(line)),
              `Start says so in the job log: ${progress.join(" | ")}`,
            );
          }
          await expectStatus(
            client().create({ image: target.image, backendOptions: { job_timeout: "forever" } }),
            Status.INVALID_ARGUMENT,
            /job_timeout is not a Go duration/,
          );
          await expectStatus(
            client().create({ image: target.image, backendOptions: { job_timeout: "-1s" } }),
            Status.DEADLINE_EXCEEDED,
            /deadline passed/,
          );
        });

        if (generation === "v1") {
          test("v1 Create's env arrives as KEY=VALUE strings or as map entries, and reaches every command", async (t) => {
            // A map<string,string> entry on field 3, encoded by hand: key = 1, value = 2.
            const mapEntry = (key: string, value: string) =>
              Buffer.concat([
                Buffer.from([0x0a, key.length]),
                Buffer.from(key),
                Buffer.from([0x12, value.length]),
                Buffer.from(value),
              ]);
            const { environmentId: id } = await clients.v1!.raw.create({
              image: target.image,
              env: [Buffer.from("FROM_STRING=s=1"), mapEntry("FROM_MAP", "m 2"), mapEntry("EMPTY", "")],
              backendOptions: {},
            });
            t.after(() => client().remove(id));
            await client().start(id);
            const result = await run(client(), id, [
              "sh",
              "-c",
              'echo "$FROM_STRING|$FROM_MAP|${EMPTY-unset}"',
            ]);
            assert.equal(result.stdout, "s=1|m 2|\n");
          });

          test("v1 Create's env reaches every command, under the Exec's own env", async (t) => {
            const { id } = await client().create({
              image: target.image,
              env: ["FROM_CREATE=1", "BOTH=create"],
            });
            t.after(() => client().remove(id));
            await client().start(id);
            const result = await run(client(), id, ["sh", "-c", 'echo "$FROM_CREATE $BOTH"'], {
              env: { BOTH: "exec" },
            });
            assert.equal(result.stdout, "1 exec\n");
          });

          test("IsHealthy answers for a running environment and errors for an unknown one", async (t) => {
            const id = await environment(t);
            const healthy = await clients.v1!.raw.isHealthy({ environmentId: id });
            assert.equal(healthy.wait, undefined);
            await expectStatus(
              clients.v1!.raw.isHealthy({ environmentId: "berth-0000000000000000" }),
              Status.NOT_FOUND,
            );
          });
        }

        test("a later CopyIn chunk that sets environment_id or dest_path is INVALID_ARGUMENT", async (t) => {
          const id = await environment(t);
          const raw = generation === "v1" ? clients.v1!.raw : clients.v1alpha!.raw;
          async function* chunks() {
            yield { environmentId: id, destPath: `${rootPath}/x`, data: Buffer.alloc(0) };
            yield { environmentId: id, data: Buffer.alloc(512) };
          }
          await expectStatus(raw.copyIn(chunks()), Status.INVALID_ARGUMENT, /only the first message/);
        });

        if (generation === "v1alpha") {
          test("environment_timeout: zero is none, a negative one (the job's deadline passed) is DEADLINE_EXCEEDED", async (t) => {
            const { id } = await client().create({ image: target.image, timeoutMs: 0 });
            t.after(() => client().remove(id));
            await client().start(id);
            assert.equal((await run(client(), id, ["true"])).exitCode, 0);
            await expectStatus(
              clients.v1alpha!.raw.create({
                image: target.image,
                labelArg: "",
                backendOptions: {},
                services: [],
                environmentTimeout: { seconds: -3, nanos: 0 },
              }),
              Status.DEADLINE_EXCEEDED,
              /-3 s: the job's deadline passed/,
            );
          });

          test("an environment past its environment_timeout is removed", async () => {
            const { id } = await client().create({ image: target.image, timeoutMs: 1500 });
            // The timeout counts from Create: a backend that boots slower than that is removed while it starts.
            await client()
              .start(id)
              .catch((err: { code?: Status; details?: string }) => {
                assert.ok(
                  err.code === Status.ABORTED || err.code === Status.NOT_FOUND,
                  `Start failed otherwise: ${err.code} ${err.details}`,
                );
              });
            const removed = await eventually(
              () =>
                client()
                  .exec(id, ["true"])
                  .then(
                    () => false,
                    (err: { code?: Status }) => err.code === Status.NOT_FOUND,
                  ),
              15_000,
            );
            assert.ok(removed, "the environment is gone within 15 s of a 1.5 s timeout");
          });
        }

        test("after Remove the id is NOT_FOUND, and Remove again succeeds", async () => {
          const { id } = await client().create({ image: target.image });
          await client().start(id);
          await client().remove(id);
          await expectStatus(client().exec(id, ["true"]), Status.NOT_FOUND, new RegExp(id));
          await expectStatus(readTar(client().copyOut(id, "/x")), Status.NOT_FOUND);
          await client().remove(id);
          await client().remove("berth-never-existed");
        });
      },
    );
  }
}
