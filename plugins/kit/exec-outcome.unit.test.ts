import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { OomKillCounts, exitedWith, oomKillCounterScript } from "./exec-outcome.js";

const run = promisify(execFile);

/**
 * Node layouts the OOM-kill counter is read on, as fixture trees standing
 * for a container's / (only /proc/self/cgroup and the cgroup files the
 * script looks at): what a job container sees on cgroup v1 and v2, with a
 * private or the host's cgroup namespace. `expected` is the counter of the
 * container's own cgroup; decoys elsewhere hold other numbers.
 */
const layouts: { name: string; files: Record<string, string>; expected?: number }[] = [
  {
    name: "cgroup v1 (hybrid), the container's memory cgroup mounted at /sys/fs/cgroup/memory (Docker, dockershim)",
    files: {
      "proc/self/cgroup":
        "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n",
      "sys/fs/cgroup/memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
      "sys/fs/cgroup/unified/cgroup.procs": "1\n",
    },
    expected: 2,
  },
  {
    name: "cgroup v1, the whole hierarchy visible (the top file is the root cgroup's)",
    files: {
      "proc/self/cgroup": "5:cpu,memory:/kubepods/pod1/abc\n",
      "sys/fs/cgroup/memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
      "sys/fs/cgroup/memory/kubepods/pod1/abc/memory.oom_control":
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    },
    expected: 3,
  },
  {
    name: "cgroup v2, private cgroup namespace (Docker's default on v2)",
    files: {
      "proc/self/cgroup": "0::/\n",
      "sys/fs/cgroup/memory.events": "low 0\nhigh 0\nmax 7\noom 1\noom_kill 4\noom_group_kill 0\n",
    },
    expected: 4,
  },
  {
    name: "cgroup v2, the host's cgroup namespace (the whole hierarchy visible, the root has no memory.events)",
    files: {
      "proc/self/cgroup": "0::/kubepods/burstable/pod1/abc\n",
      "sys/fs/cgroup/memory.stat": "anon 0\n",
      "sys/fs/cgroup/kubepods/burstable/pod1/abc/memory.events": "low 0\nhigh 0\nmax 9\noom 5\noom_kill 5\n",
      "sys/fs/cgroup/kubepods/burstable/memory.events": "oom_kill 11\n",
    },
    expected: 5,
  },
  {
    name: "no memory cgroup readable (no verdict)",
    files: { "proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cgroup.procs": "1\n" },
  },
];

describe("the OOM-kill counter, read on cgroup v1 and v2 layouts", () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "berth-cgroups-"));
  });
  after(() => rm(root, { recursive: true, force: true }));

  // dash as /bin/sh, and busybox's sh, which the small job images have.
  for (const shell of [["/bin/sh"], ["busybox", "sh"]]) {
    for (const [index, layout] of layouts.entries()) {
      test(`${shell.join(" ")}: ${layout.name}`, async () => {
        const tree = join(root, `${shell.length}-${index}`);
        for (const [path, content] of Object.entries(layout.files)) {
          await mkdir(dirname(join(tree, path)), { recursive: true });
          await writeFile(join(tree, path), content);
        }
        const [program, ...args] = shell;
        const output = await run(program, [
          ...args,
          "-c",
          oomKillCounterScript,
          "berth-oom-counter",
          tree,
        ]).then(
          ({ stdout }) => stdout,
          (err: { code?: number; stdout?: string; stderr?: string }) => {
            assert.equal(err.code, 1, `the script fails only by finding nothing: ${err.stderr}`);
            return err.stdout ?? "";
          },
        );
        const counts = new OomKillCounts();
        const verdict = await counts.exited("env", 137, async () => output);
        assert.deepEqual(verdict, exitedWith(137, layout.expected !== undefined && layout.expected > 0));
        if (layout.expected !== undefined)
          assert.match(output, new RegExp(`^oom_kill ${layout.expected}$`, "m"));
        else assert.equal(output, "");
      });
    }
  }
});

describe("OOM verdicts", () => {
  test("an exit of 137 is the OOM killer's only when the counter went up since the last look", async () => {
    const counts = new OomKillCounts();
    const counter = (n: number) => async () => `oom_kill_disable 0\nunder_oom 0\noom_kill ${n}\n`;
    assert.deepEqual(await counts.exited("a", 137, counter(1)), exitedWith(137, true));
    assert.deepEqual(await counts.exited("a", 137, counter(1)), exitedWith(137, false));
    assert.deepEqual(await counts.exited("a", 137, counter(2)), exitedWith(137, true));
    assert.match(String((exitedWith(137, true) as { message?: string }).message), /out-of-memory killer/);
    assert.match(String((exitedWith(137, false) as { message?: string }).message), /killed by SIGKILL/);
    assert.deepEqual(await counts.exited("a", 3, counter(9)), { kind: "exited", exitCode: 3 });
    assert.deepEqual(await counts.exited("b", 137, async () => undefined), exitedWith(137));
  });

  test("without a counter, a container the OOM killer ended is named; its successor's counter starts at zero", async () => {
    const counts = new OomKillCounts();
    const counter = (n: number) => async () => `oom_kill ${n}\n`;
    const gone = async () => undefined; // the container is not running: nothing to read the counter in
    assert.deepEqual(await counts.exited("a", 137, counter(1)), exitedWith(137, true));
    assert.deepEqual(await counts.exited("a", 137, gone, async () => true), exitedWith(137, true));
    // The new container's first OOM kill (its counter 1, as the old one's was) is still named.
    assert.deepEqual(await counts.exited("a", 137, counter(1)), exitedWith(137, true));
    assert.deepEqual(await counts.exited("a", 137, gone, async () => false), exitedWith(137, false));
    let asked = false;
    const ask = async () => (asked = true);
    assert.deepEqual(await counts.exited("a", 137, counter(1), ask), exitedWith(137, false));
    assert.equal(asked, false, "the container's status is asked only when the counter cannot be read");
  });
});
