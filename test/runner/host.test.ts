import { access } from "node:fs/promises";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { processesOfEnvironment, runnerSuite } from "./scenarios.js";

const root = mkdtempSync(join(tmpdir(), "berth-runner-host-"));

runnerSuite({
  driver: "host",
  serveArgs: [
    "--instance",
    "runner-host",
    "--backend",
    "host",
    "--backend-opt",
    "isolation=bwrap",
    "--backend-opt",
    `root=${root}`,
  ],
  labelArg: "host",
  leftovers: async (id) => {
    const dir = join(root, "runner-host", "envs", id);
    const directory = await access(dir).then(
      () => [`directory ${dir}`],
      () => [],
    );
    return [...directory, ...(await processesOfEnvironment(id))];
  },
});
