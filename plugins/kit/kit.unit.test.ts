import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import pino from "pino";
import { Status } from "../../src/errors.js";
import { readOomKillCounter, signalMarked } from "./container-commands.js";
import { containerLayout } from "./container-layout.js";
import { escalateKill, type StopSignal } from "./kill-escalation.js";
import { createdAt, environmentLabels, labels } from "./labels.js";
import { statusOfHttp } from "./http-status.js";

describe("the drivers' kit", () => {
  test("objects are labelled with instance, environment and Unix seconds; both time formats read back", () => {
    const now = new Date("2026-12-03T10:00:00.750Z");
    const objectLabels = environmentLabels("ci", "env-1", now);
    assert.deepEqual(objectLabels, {
      "berth.managed": "true",
      "berth.instance": "ci",
      "berth.environment": "env-1",
      "berth.created": "1796292000",
    });
    assert.equal(createdAt(objectLabels)?.toISOString(), "2026-12-03T10:00:00.000Z");
    // What berth 0.1's Docker driver wrote: still an age after an upgrade.
    assert.equal(
      createdAt({ [labels.created]: "2026-12-01T08:30:00.000Z" })?.toISOString(),
      "2026-12-01T08:30:00.000Z",
    );
    assert.equal(createdAt({ [labels.created]: "yesterday" }), undefined);
    assert.equal(createdAt({}), undefined);
    assert.equal(createdAt(undefined), undefined);
  });

  test("one HTTP status table for every backend", () => {
    const table = Object.fromEntries(
      [400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504, 418].map((code) => [
        code,
        Status[statusOfHttp(code)],
      ]),
    );
    assert.deepEqual(table, {
      400: "INVALID_ARGUMENT",
      401: "UNAUTHENTICATED",
      403: "PERMISSION_DENIED",
      404: "NOT_FOUND",
      409: "FAILED_PRECONDITION",
      422: "INVALID_ARGUMENT",
      429: "UNAVAILABLE",
      500: "UNKNOWN",
      502: "UNAVAILABLE",
      503: "UNAVAILABLE",
      504: "UNAVAILABLE",
      418: "UNKNOWN",
    });
  });

  test("a kill escalates from TERM to KILL after the grace, and not at all once cancelled", async () => {
    const sent: StopSignal[] = [];
    const send = async (signal: StopSignal) => void sent.push(signal);
    escalateKill(send, 20);
    assert.deepEqual(sent, ["TERM"]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(sent, ["TERM", "KILL"]);

    sent.length = 0;
    escalateKill(send, 20).cancel();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(sent, ["TERM"]);
  });

  test("a command that cannot be signalled or counted is logged, not thrown", async () => {
    const lines: string[] = [];
    const logger = pino(
      { level: "debug" },
      new Writable({ write: (chunk: Buffer, _encoding, done) => done(void lines.push(chunk.toString())) }),
    );
    const commands: string[][] = [];
    const noShell = async (argv: string[], output: { stderr?: Writable }) => {
      commands.push(argv);
      output.stderr?.write("sh: tr: not found\n");
      return 127;
    };
    await signalMarked(noShell, "TERM", "BERTH_EXEC_ID=x", logger);
    assert.deepEqual(commands[0]?.slice(-2), ["TERM", "BERTH_EXEC_ID=x"]);
    assert.deepEqual(logged(lines.shift()), {
      msg: "could not signal a cancelled command (the image needs sh, tr and grep)",
      err: "sh: tr: not found",
    });
    const unreachable = () => Promise.reject(new Error("engine gone"));
    assert.equal(await readOomKillCounter(unreachable, logger), undefined);
    assert.deepEqual(logged(lines.shift()), {
      msg: "could not read the job container's OOM-kill counter",
      err: "engine gone",
    });
  });

  test("a job container's layout is the runner's Docker layout on the image's platform", () => {
    const layout = containerLayout({ os: "Linux", arch: "ARM64" });
    assert.equal(layout.rootPath, "/workspace");
    assert.equal(layout.actPath, "/var/run/act");
    assert.equal(layout.arch, "ARM64");
    assert.equal(layout.pathSeparator, ":");
  });
});

function logged(line: string | undefined): { msg?: string; err?: string } {
  const { msg, err } = JSON.parse(line ?? "{}") as { msg?: string; err?: string };
  return { msg, err };
}
