/**
 * The core's own logic in process, against the labelled fake driver
 * (fake-driver.ts): calls overlapping on one environment, Remove waiting for
 * and aborting what runs, slots at maxEnvironments, timeouts, backend_options
 * and workdir resolution. No real backend is involved; the conformance and
 * runner-sequence suites hold the real drivers to the same behaviour.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { EnvironmentSpec, ExecResult } from "../../src/driver.js";
import type { Backend, ExecEvent } from "../../src/environments.js";
import { BerthError, Status } from "../../src/errors.js";
import { environmentSpec } from "../../src/protocol/common.js";
import { type Core, core, never } from "./core-setup.js";
import { fakeLayout } from "./fake-driver.js";

/** The core over the fake driver (core-setup.ts), optionally strict about backend_options. */
function setup(limits: Partial<Backend["limits"]> = {}, strictBackendOptions = false): Core {
  const c = core(limits);
  c.backend.strictBackendOptions = strictBackendOptions;
  return c;
}

async function create(s: Core, fields: Partial<EnvironmentSpec> = {}, signal = never): Promise<string> {
  return (await s.service.create(s.backend, environmentSpec(fields), signal)).id;
}

/** Runs an Exec to its end: its output and result. */
async function exec(
  s: Core,
  id: string,
  command: string[],
  options: { workdir?: string; env?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<{ stdout: string; result?: ExecResult }> {
  let stdout = "";
  let result: ExecResult | undefined;
  const spec = { command, env: options.env ?? {}, user: "", workdir: options.workdir ?? "" };
  for await (const event of s.service.exec(id, spec, options.signal ?? never) as AsyncIterable<ExecEvent>) {
    if (event.type === "output") stdout += event.data.toString();
    else result = event.result;
  }
  return { stdout, result };
}

const code = (expected: Status, pattern?: RegExp) => (err: unknown) => {
  assert.ok(err instanceof BerthError, `expected a BerthError, got ${String(err)}`);
  assert.equal(Status[err.code], Status[expected], err.message);
  if (pattern) assert.match(err.message, pattern);
  return true;
};

const until = async (check: () => boolean) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(check(), "the condition came true");
};

describe("calls on one environment", () => {
  test("overlap: an Exec runs while another waits, and health answers meanwhile", async () => {
    const s = setup();
    const id = await create(s);
    const waiting = exec(s, id, ["wait", "g"]);
    assert.deepEqual(await s.service.health(id, never), { waitMs: 0 });
    assert.equal((await exec(s, id, ["echo", "meanwhile"])).stdout, "meanwhile\n");
    s.driver.open("g");
    assert.deepEqual((await waiting).result, { kind: "exited", exitCode: 0 });
  });

  test("Remove aborts what runs and waits until it is over; new calls meanwhile are NOT_FOUND", async () => {
    const s = setup();
    s.driver.dyingMs = 150;
    const id = await create(s);
    const running = exec(s, id, ["wait", "never"]).then(
      () => "finished",
      (err: unknown) => (err instanceof BerthError ? Status[err.code] : String(err)),
    );
    await until(() => s.driver.workdirs.length === 1);
    const removing = s.service.remove(id);
    const again = s.service.remove(id);
    await assert.rejects(exec(s, id, ["echo", "late"]), code(Status.NOT_FOUND, /being removed/));
    assert.deepEqual(s.driver.removed, [], "the driver removes only after the running Exec is over");
    await Promise.all([removing, again]);
    assert.equal(await running, "ABORTED", "the running Exec was aborted by the Remove");
    assert.deepEqual(s.driver.removed, [id], "two Removes, one removal");
    assert.equal(s.service.knows(id), false);
    await assert.rejects(exec(s, id, ["echo", "gone"]), code(Status.NOT_FOUND, /not found/));
  });

  test("a Remove the backend refuses leaves the environment usable, and a later Remove tries again", async () => {
    const s = setup();
    const id = await create(s);
    s.driver.failNextRemove = true;
    await assert.rejects(s.service.remove(id), code(Status.FAILED_PRECONDITION, /refused the removal/));
    assert.equal((await exec(s, id, ["echo", "still here"])).stdout, "still here\n");
    await s.service.remove(id);
    assert.deepEqual(s.driver.removed, [id]);
  });
});

describe("environment slots at limits.maxEnvironments", () => {
  test("a Create at the limit waits, and the first waiting gets the slot a Remove frees", async () => {
    const s = setup({ maxEnvironments: 1 });
    const first = await create(s);
    const order: string[] = [];
    const second = create(s).then((id) => (order.push("second"), id));
    const third = create(s).then((id) => (order.push("third"), id));
    await until(() => s.log().includes("this Create waits for one to be removed"));
    assert.match(await s.metrics.text(), /^berth_creates_waiting\{backend="fake"\} 2$/m);
    await s.service.remove(first);
    const secondId = await second;
    assert.deepEqual(order, ["second"], "one slot, one Create");
    await s.service.remove(secondId);
    await s.service.remove(await third);
    assert.deepEqual(order, ["second", "third"]);
    assert.equal(s.service.countOf(s.backend), 0);
    assert.match(await s.metrics.text(), /^berth_creates_waiting\{backend="fake"\} 0$/m);
    assert.match(await s.metrics.text(), /^berth_create_wait_seconds_count\{backend="fake"\} 2$/m);
  });

  test("a waiting Create ends at createWaitSeconds with RESOURCE_EXHAUSTED, or when its call is cancelled", async () => {
    const s = setup({ maxEnvironments: 1, createWaitMs: 50 });
    const first = await create(s);
    await assert.rejects(
      create(s),
      code(Status.RESOURCE_EXHAUSTED, /already has 1 environments.*none was removed within 0\.05 s/),
    );
    const cancel = new AbortController();
    const cancelled = create(s, {}, cancel.signal);
    cancel.abort(new Error("the runner cancelled the job"));
    await assert.rejects(cancelled, /the runner cancelled the job/);
    assert.equal(s.service.countOf(s.backend), 1, "neither took a slot");
    await s.service.remove(first);
    await create(s);
  });

  test("createWaitSeconds 0 refuses at once", async () => {
    const s = setup({ maxEnvironments: 1, createWaitMs: 0 });
    await create(s);
    await assert.rejects(create(s), code(Status.RESOURCE_EXHAUSTED, /retry when a job has finished/));
  });
});

describe("Create", () => {
  test("a negative timeout is DEADLINE_EXCEEDED; a timeout removes the environment when it passes", async () => {
    const s = setup();
    await assert.rejects(create(s, { timeoutMs: -1500 }), code(Status.DEADLINE_EXCEEDED, /-1\.5 s/));
    assert.deepEqual(s.driver.created, [], "the driver was not asked");
    const id = await create(s, { timeoutMs: 30 });
    await until(() => !s.service.knows(id));
    assert.deepEqual(s.driver.removed, [id]);
  });

  test("backend_options the driver does not know are ignored with a warning, or refused when strict", async () => {
    const s = setup();
    const id = await create(s, { backendOptions: { known: "1", mystery: "x" } });
    assert.deepEqual(s.driver.created[0].spec.backendOptions, { known: "1" });
    assert.match(s.log(), /"ignored":\["mystery"\].*backend_options the driver does not know are ignored/);
    const lines: string[] = [];
    for await (const event of s.service.start(id, never))
      if (event.type === "progress") lines.push(event.line);
    assert.equal(lines[0], "berth: ignoring backend_options the fake backend does not know: mystery");
    const strict = setup({}, true);
    await assert.rejects(
      create(strict, { backendOptions: { mystery: "x" } }),
      code(Status.INVALID_ARGUMENT, /unknown backend_options "mystery" for backend fake.*known: known/),
    );
  });

  test("label_arg and job_timeout of a runner's backend_options become the label and the timeout", () => {
    const spec = environmentSpec({ backendOptions: { label_arg: "busybox", job_timeout: "1h", known: "1" } });
    assert.deepEqual(
      [spec.labelArg, spec.timeoutMs, spec.backendOptions],
      ["busybox", 3_600_000, { known: "1" }],
    );
    assert.equal(
      environmentSpec({ labelArg: "own", backendOptions: { label_arg: "other" } }).labelArg,
      "own",
    );
    assert.equal(
      environmentSpec({ timeoutMs: 60_000, backendOptions: { job_timeout: "2h" } }).timeoutMs,
      60_000,
    );
    assert.equal(
      environmentSpec({ timeoutMs: 7_200_000, backendOptions: { job_timeout: "90s" } }).timeoutMs,
      90_000,
    );
    assert.equal(environmentSpec({ backendOptions: { job_timeout: "0s" } }).timeoutMs, undefined);
    assert.throws(
      () => environmentSpec({ backendOptions: { job_timeout: "soon" } }),
      code(Status.INVALID_ARGUMENT, /job_timeout is not a Go duration/),
    );
  });
});

describe("Exec workdirs", () => {
  test("relative ones resolve against GITHUB_WORKSPACE, else the working_dir; empty ones are the working_dir", async () => {
    const s = setup();
    const id = await create(s, { workingDir: "/workspace/acme/widget" });
    const pwd = async (workdir: string, env: Record<string, string> = {}) =>
      (await exec(s, id, ["pwd"], { workdir, env })).stdout.trim();
    assert.equal(await pwd("sub"), "/workspace/acme/widget/sub");
    assert.equal(await pwd("sub", { GITHUB_WORKSPACE: "/elsewhere/repo" }), "/elsewhere/repo/sub");
    assert.equal(await pwd("../x/./y"), "/workspace/acme/x/y");
    assert.equal(await pwd(""), "/workspace/acme/widget");
    assert.equal(await pwd("/abs//dir/"), "/abs/dir/");
    const plain = await create(s);
    assert.equal(
      (await exec(s, plain, ["pwd"], { workdir: "sub" })).stdout.trim(),
      `${fakeLayout.rootPath}/sub`,
    );
    await assert.rejects(exec(s, id, ["pwd"], { workdir: "a\0b" }), code(Status.INVALID_ARGUMENT, /NUL/));
    await assert.rejects(
      exec(s, id, ["pwd"], { workdir: `/${"n".repeat(300)}` }),
      code(Status.INVALID_ARGUMENT, /a 300-byte name in it.*NAME_MAX/),
    );
    await assert.rejects(
      exec(s, id, ["pwd"], { workdir: "/d".repeat(2500) }),
      code(Status.INVALID_ARGUMENT, /5000 bytes long.*PATH_MAX/),
    );
  });

  test("records keep the layout and working directory, and an adopted environment resolves the same", async () => {
    const s = setup();
    const id = await create(s, { workingDir: "/workspace/acme/widget" });
    const [record] = s.service.records();
    assert.deepEqual([record.layout, record.workdir], [fakeLayout, "/workspace/acme/widget"]);
    const after = setup();
    after.service.adopt(after.backend, record);
    assert.equal((await exec(after, id, ["pwd"], { workdir: "rel" })).stdout, "/workspace/acme/widget/rel\n");
  });
});
