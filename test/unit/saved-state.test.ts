/**
 * Driver state read back from berth's state file: each driver's record as
 * berth wrote it before formats had numbers (the shapes of 0.1, copied from
 * real state files) is read, and a record that does not match is refused
 * with a reason, never cast.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { SavedState } from "../../src/driver.js";
import { type EnvironmentRecord, readSavedState } from "../../src/state-store.js";
import { dockerSavedState } from "../../plugins/docker/state.js";
import { hostSavedState } from "../../plugins/host/state.js";
import { kubernetesSavedState } from "../../plugins/kubernetes/state.js";

const layout = {
  rootPath: "/workspace",
  actPath: "/var/run/act",
  toolCachePath: "/opt/hostedtoolcache",
  tempPath: "/tmp",
  pathVariableName: "PATH",
  defaultPathVariable: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  pathSeparator: ":",
  environmentCaseInsensitive: false,
  os: "Linux",
  arch: "X64",
};

/** One record per driver in the unnumbered format, with a field the driver cannot do without. */
const unnumbered: {
  driver: string;
  format: SavedState<unknown>;
  state: Record<string, unknown>;
  needed: string;
}[] = [
  {
    driver: "docker",
    format: dockerSavedState,
    state: {
      containerId: "5f1c0e6a2b7d",
      network: "berth-berth-0123456789abcdef",
      serviceIds: [{ name: "db", id: "9a8b7c6d5e4f" }],
      imageEnv: { PATH: "/usr/bin:/bin" },
    },
    needed: "containerId",
  },
  {
    driver: "kubernetes",
    format: kubernetesSavedState,
    state: { namespace: "ci", pod: "berth-0123456789abcdef", extraHosts: ["my_db"] },
    needed: "pod",
  },
  {
    driver: "host",
    format: hostSavedState,
    // berth 0.1's host records had no `top` (the driver falls back to dir).
    state: {
      dir: "/tmp/berth-host/berth/berth-0123456789abcdef/env",
      layout: { ...layout, rootPath: "/tmp/berth-host/berth/berth-0123456789abcdef/env" },
      env: { CI: "true" },
      workingDir: "/tmp/berth-host/berth/berth-0123456789abcdef/env",
    },
    needed: "dir",
  },
];

function record(state: unknown, stateVersion?: number): EnvironmentRecord {
  return {
    id: "berth-0123456789abcdef",
    backend: "any",
    state,
    createdAt: "2026-12-01T08:30:00.000Z",
    ...(stateVersion === undefined ? {} : { stateVersion }),
  };
}

describe("saved driver state", () => {
  for (const { driver, format, state, needed } of unnumbered) {
    test(`${driver}: a record without a format number is read as format 1, whole`, () => {
      assert.deepEqual(readSavedState(format, record(state)), { state });
      assert.deepEqual(readSavedState(format, record(state, 1)), { state });
    });

    test(`${driver}: a renamed field, a wrong type or a newer format is refused with the reason`, () => {
      const { [needed]: value, ...rest } = state;
      const renamed = readSavedState(format, record({ ...rest, [`${needed}Renamed`]: value }));
      assert.ok("problem" in renamed, "a record missing a field is not read");
      assert.match(renamed.problem, new RegExp(`^its driver state does not match format 1: ${needed}: `));
      const wrongType = readSavedState(format, record({ ...state, [needed]: 42 }));
      assert.ok("problem" in wrongType && wrongType.problem.includes(`${needed}: `));
      assert.deepEqual(readSavedState(format, record(state, 2)), {
        problem: "its driver state is in format 2, newer than this berth's 1 (was berth downgraded?)",
      });
      assert.ok("problem" in readSavedState(format, record(undefined)), "no state at all is refused");
    });
  }
});
