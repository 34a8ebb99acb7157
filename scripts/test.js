#!/usr/bin/env node
// Runs test stages of the built tree (dist/) by name, one after another, and
// says how long each took. Every stage runs even if an earlier one failed, so
// one run shows everything that is red; the exit code is 1 if any failed.
//
//   node scripts/test.js unit host docker runner
//
// unit:       the core's own logic in process (queues, deadlines, errors, config,
//             tar and env-file parsing, wire format, property tests); seconds
// host:       real `berth serve` processes on real sockets, host driver (bubblewrap)
// docker:     the Docker driver on the real engine
// runner:     the runner's own call sequence (test/runner) on host and Docker
// hostile:    attacks of a hostile job and a careless client (test/hostile)
// kubernetes: the Kubernetes driver on a real cluster (npm run test:kubernetes starts one)
import { spawnSync } from "node:child_process";

const stages = {
  unit: ["dist/src/**/*.test.js", "dist/plugins/**/*.unit.test.js", "dist/test/unit/*.test.js"],
  host: ["dist/test/host/*.test.js", "dist/plugins/host/host.test.js"],
  docker: ["dist/test/docker/*.test.js", "dist/plugins/docker/docker.test.js"],
  runner: ["dist/test/runner/host.test.js", "dist/test/runner/docker.test.js"],
  hostile: ["dist/test/hostile/*.test.js"],
  kubernetes: [
    "dist/test/kubernetes/*.test.js",
    "dist/plugins/kubernetes/kubernetes.test.js",
    "dist/test/runner/kubernetes.test.js",
  ],
};

const names = process.argv.slice(2);
const unknown = names.filter((name) => !(name in stages));
if (names.length === 0 || unknown.length > 0) {
  process.stderr.write(
    `usage: node scripts/test.js STAGE...; stages: ${Object.keys(stages).join(", ")}` +
      (unknown.length > 0 ? ` (unknown: ${unknown.join(", ")})` : "") +
      "\n",
  );
  process.exit(2);
}

const results = [];
for (const name of names) {
  process.stdout.write(`\n=== test stage ${name}\n`);
  const started = Date.now();
  const { status, signal } = spawnSync(
    process.execPath,
    ["--test", "--test-concurrency=1", "--test-reporter=spec", ...stages[name]],
    { stdio: "inherit" },
  );
  const seconds = (Date.now() - started) / 1000;
  const ok = status === 0;
  results.push({ name, ok, seconds });
  process.stdout.write(
    `=== test stage ${name}: ${ok ? "passed" : `FAILED (${signal ?? `exit ${status}`})`} in ${seconds.toFixed(1)} s\n`,
  );
}
process.stdout.write("\ntest stages:\n");
for (const { name, ok, seconds } of results) {
  process.stdout.write(
    `  ${name.padEnd(11)} ${ok ? "passed" : "FAILED"} ${seconds.toFixed(1).padStart(7)} s\n`,
  );
}
process.exit(results.every((result) => result.ok) ? 0 : 1);
