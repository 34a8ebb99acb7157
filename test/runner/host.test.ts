import { access } from "node:fs/promises";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { processesOfEnvironment, runnerSuite } from "./scenarios.js";

const root = mkdtempSync(join(tmpdir(), "berth-runner-host-"));

runnerSuite({
  driver: "host",
  serveArgs: ["--backend", "host", "--backend-opt", "isolation=bwrap", "--backend-opt", `root=${root}`],
  labelArg: "host",
  leftovers: async (id) => {
    const directory = await access(join(root, "envs", id)).then(
      () => [`directory ${join(root, "envs", id)}`],
      () => [],
    );
    return [...directory, ...(await processesOfEnvironment(id))];
  },
});
