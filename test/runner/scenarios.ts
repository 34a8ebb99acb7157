/**
 * Real jobs as the runner drives them (runner-sequence.ts), on one driver,
 * over both protocol generations, each scenario one job; after each,
 * nothing of the job may be left: no process, container, network, pod or
 * directory.
 */
import assert from "node:assert/strict";
import { readFile, readdir } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import type { Generation } from "../../src/client.js";
import { openChannel } from "../../src/client.js";
import { type DaemonProcess, startDaemon } from "../support/daemon-process.js";
import { processGone } from "../support/processes.js";
import { RunnerJob, type RunnerJobOptions, jobWorkdir } from "./runner-sequence.js";

export interface RunnerTarget {
  driver: string;
  /** `berth serve` arguments selecting and configuring the driver. */
  serveArgs: string[];
  /** The runs-on label's argument: the job's image when it has no `container:`. */
  labelArg: string;
  /** For `container: image:` (an image with /www/index.html); undefined: the driver has no images. */
  containerImage?: string;
  /** A service image serving webIndexHtml on port 80; undefined: no service containers. */
  serviceImage?: string;
  /** What of an environment is left on the backend (containers, networks, pods, directories). */
  leftovers: (id: string) => Promise<string[]>;
  skip?: string | false;
}

/** Processes on this machine whose environment carries BERTH_ENVIRONMENT_ID=id (host driver). */
export async function processesOfEnvironment(id: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    // EACCES: a process berth's user may not look into (this sandbox's PID 1), so none of a job's.
    const environ = await readFile(`/proc/${pid}/environ`, "utf8").catch((err: NodeJS.ErrnoException) =>
      err.code === "EACCES" ? "" : processGone(err),
    );
    if (environ.split("\0").includes(`BERTH_ENVIRONMENT_ID=${id}`)) found.push(`process ${pid}`);
  }
  return found;
}

/** Polls check() until it is true or timeoutMs passes (a killed process takes a moment to go). */
async function eventually<T>(
  check: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

export function runnerSuite(target: RunnerTarget): void {
  describe(`the runner's sequence on the ${target.driver} driver`, { skip: target.skip ?? false }, () => {
    let daemon: DaemonProcess;
    let channel: ReturnType<typeof openChannel>;
    before(async () => {
      daemon = await startDaemon(target.serveArgs);
      channel = openChannel(daemon.address);
    });
    after(async () => {
      channel?.close();
      await daemon?.stop();
    });

    /** Runs one job: create and start, set up, the scenario's steps, always Remove; then checks nothing is left. */
    const job = async (
      generation: Generation,
      steps: (job: RunnerJob) => Promise<void>,
      options: Partial<RunnerJobOptions> = {},
    ) => {
      const runner = new RunnerJob(channel, { generation, labelArg: target.labelArg, ...options });
      try {
        await runner.createAndStart();
        const setUp = await runner.setUp();
        assert.equal(setUp.exitCode, 0, `mkdir -p of the job directory: ${setUp.failure} ${setUp.stderr}`);
        await steps(runner);
      } finally {
        await runner.remove();
      }
      assert.deepEqual(await target.leftovers(runner.id), [], "nothing of the job is left after Remove");
      return runner;
    };

    for (const generation of ["v1", "v1alpha"] as const) {
      describe(`plugin.${generation}`, () => {
        test("env, output, path and summary files carry from step to step", async () => {
          await job(generation, async (runner) => {
            const first = await runner.step(
              [
                'echo "GREETING=hello world" >> "$GITHUB_ENV"',
                '{ echo "LETTER<<EOF"; echo "line one"; echo "line two"; echo "EOF"; } >> "$GITHUB_ENV"',
                'echo "answer=42" >> "$GITHUB_OUTPUT"',
                'mkdir -p "$RUNNER_TEMP/tools"',
                "printf '#!/bin/sh\\necho tool ran\\n' > \"$RUNNER_TEMP/tools/mytool\"",
                'chmod +x "$RUNNER_TEMP/tools/mytool"',
                'echo "$RUNNER_TEMP/tools" >> "$GITHUB_PATH"',
                'echo "# Summary of step 1" >> "$GITHUB_STEP_SUMMARY"',
              ].join("\n"),
            );
            assert.equal(first.exitCode, 0, `${first.failure} ${first.stderr}`);
            assert.deepEqual(first.outputs, { answer: "42" });
            assert.equal(first.summary, "# Summary of step 1\n");
            const second = await runner.step('echo "$GREETING|$LETTER"; mytool; pwd; echo "$RUNNER_OS"');
            assert.equal(second.exitCode, 0, `${second.failure} ${second.stderr}`);
            assert.equal(second.stdout, `hello world|line one\nline two\ntool ran\n${jobWorkdir}\nLinux\n`);
            assert.deepEqual(second.outputs, {}, "each step starts with empty file-command files");
          });
        });

        test("working-directory: relative ones resolve against the job directory, absolute ones are used as they are", async () => {
          await job(generation, async (runner) => {
            const relative = await runner.step("pwd; echo here > marker", { workingDirectory: "sub/dir" });
            assert.equal(relative.exitCode, 0, `${relative.failure} ${relative.stderr}`);
            assert.equal(relative.stdout, `${jobWorkdir}/sub/dir\n`);
            const absolute = await runner.step("pwd; cat ../widget/sub/dir/marker", {
              workingDirectory: "/workspace/acme/other",
            });
            assert.equal(absolute.exitCode, 0, `${absolute.failure} ${absolute.stderr}`);
            assert.equal(absolute.stdout, "/workspace/acme/other\nhere\n");
          });
        });

        test("a failing step fails with its exit code; an always() step after it runs", async () => {
          await job(generation, async (runner) => {
            const failing = await runner.step("echo before; exit 3");
            assert.equal(failing.exitCode, 3);
            assert.equal(failing.failure, undefined);
            assert.equal(failing.stdout, "before\n");
            const always = await runner.step("echo after");
            assert.deepEqual([always.exitCode, always.stdout], [0, "after\n"]);
          });
        });

        test("a step timeout stops a process tree that ignores SIGTERM; the job goes on", async () => {
          const mark = `314.${process.pid % 1000}${generation.length}`;
          await job(generation, async (runner) => {
            const timeout = new AbortController();
            await assert.rejects(
              runner.step(
                [
                  "trap '' TERM",
                  `sh -c "trap '' TERM; sleep ${mark}1" &`,
                  "echo started",
                  `sleep ${mark}2`,
                ].join("\n"),
                {
                  signal: timeout.signal,
                  onOutput: (_stream, data) => {
                    if (data.toString().includes("started")) setTimeout(() => timeout.abort(), 300);
                  },
                },
              ),
              /abort|cancel/i,
            );
            const count = `ps -o args | grep -c '^sleep ${mark.replace(".", "[.]")}' || true`;
            const left = await eventually(
              async () => (await runner.step(count)).stdout.trim(),
              (value) => value === "0",
              15_000,
            );
            assert.equal(left, "0", "no process of the timed-out step is left");
            const next = await runner.step("echo next step");
            assert.deepEqual([next.exitCode, next.stdout], [0, "next step\n"]);
          });
        });

        test("a job cancelled mid-step: the Exec is cancelled and Remove follows at once", async () => {
          const cancel = new AbortController();
          const runner = await job(generation, async (running) => {
            await assert.rejects(
              running.step("echo started; sleep 315", {
                signal: cancel.signal,
                onOutput: (_stream, data) => {
                  if (data.toString().includes("started")) cancel.abort();
                },
              }),
              /abort|cancel/i,
            );
          });
          assert.ok(runner.id);
        });

        test(
          "container: image: the job runs in the job's image, not the label's",
          { skip: !target.containerImage && "this driver has no images" },
          async () => {
            await job(
              generation,
              async (runner) => {
                const step = await runner.step("cat /www/index.html");
                assert.deepEqual([step.exitCode, step.stdout], [0, "hello from web\n"]);
              },
              { image: target.containerImage },
            );
          },
        );

        test(
          "a service container is reached by its name",
          { skip: !target.serviceImage && "this driver has no service containers" },
          async () => {
            await job(
              generation,
              async (runner) => {
                const step = await runner.step(
                  "for i in $(seq 100); do wget -q -O - http://web/ && exit 0; sleep 0.2; done; exit 1",
                );
                assert.deepEqual([step.exitCode, step.stdout], [0, "hello from web\n"], step.stderr);
              },
              { services: [{ name: "web", image: target.serviceImage!, ports: ["80"] }] },
            );
          },
        );

        test("three jobs at once, each in its own /workspace/acme/widget", async () => {
          const names = ["one", "two", "three"];
          const seen = await Promise.all(
            names.map(async (name) => {
              let listing = "";
              await job(generation, async (runner) => {
                const write = await runner.step(
                  `echo ${name} > mine; sleep 1; ls; cat mine; ls /workspace/acme`,
                );
                assert.equal(write.exitCode, 0, `${write.failure} ${write.stderr}`);
                listing = write.stdout;
              });
              return listing;
            }),
          );
          assert.deepEqual(
            seen,
            names.map((name) => `mine\n${name}\nwidget\n`),
          );
        });
      });
    }
  });
}
