/**
 * `npm run bench:load`: one `berth serve` with a host and a docker backend
 * holds 64 host and 16 docker environments at once; each runs Exec, CopyIn
 * and CopyOut in a loop for BERTH_LOAD_SECONDS (default 30). Rounds in the
 * same daemon process (BERTH_LOAD_ROUNDS, default 3; the first warms up):
 * errors (must be 0), p50/p99 per operation, and the daemon's open file
 * descriptors, RSS and heap after a full collection before and after each
 * round (no growth once warmed up). Writes bench/load-results.json; exits 1
 * if any operation failed.
 */
import { createWriteStream } from "node:fs";
import { readFile, readdir, writeFile } from "node:fs/promises";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { openChannel, v1alphaClient } from "../src/client.js";
import { messageOf } from "../src/errors.js";
import { startDaemon } from "../test/support/daemon-process.js";
import { dockerAvailable, ensureTestImages, testImages } from "../test/support/docker-images.js";
import { once, readTar, tarOf } from "../test/support/tar.js";
import { latencySummary, toMiB } from "./util.js";

const seconds = Number(process.env.BERTH_LOAD_SECONDS ?? 30);
/** Rounds in the same daemon process: the first warms up, the others must not grow. */
const roundCount = Number(process.env.BERTH_LOAD_ROUNDS ?? 3);
/** Where to write a heap snapshot of the daemon after each round, to trace growth (off by default). */
const snapshotDir = process.env.BERTH_LOAD_HEAP_SNAPSHOTS;
const plan = [
  { backend: "host", environments: 64, image: "" },
  { backend: "docker", environments: 16, image: testImages.busybox },
];
const resultsPath = fileURLToPath(new URL("../../bench/load-results.json", import.meta.url));

/**
 * The daemon's open file descriptors and RSS, and its V8 heap right after a
 * full collection (through its inspector, which only this bench turns on):
 * RSS alone cannot tell a leak from memory V8 or the allocator keeps for
 * later, the heap after a collection can.
 */
async function daemonFigures(pid: number, url: string): Promise<Record<string, number>> {
  const heapUsed = await withInspector(url, async (call) => {
    await call("HeapProfiler.collectGarbage");
    return call("Runtime.evaluate", { expression: "process.memoryUsage().heapUsed", returnByValue: true });
  });
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  return {
    fds: (await readdir(`/proc/${pid}/fd`)).length,
    rssMiB: toMiB(rss),
    heapAfterGcMiB: toMiB(heapUsed as number),
  };
}

/** Writes a heap snapshot of the daemon to `path` (DevTools' .heapsnapshot format). */
async function heapSnapshot(url: string, path: string): Promise<void> {
  const file = createWriteStream(path);
  try {
    await withInspector(url, (call) =>
      call("HeapProfiler.takeHeapSnapshot", {}, (method, params) => {
        if (method === "HeapProfiler.addHeapSnapshotChunk") file.write((params as { chunk: string }).chunk);
      }),
    );
  } finally {
    await new Promise((resolve) => file.end(resolve));
  }
}

function fail(message: string): never {
  throw new Error(message);
}

type InspectorCall = (
  method: string,
  params?: object,
  onEvent?: (method: string, params: unknown) => void,
) => Promise<unknown>;

/** A Chrome DevTools Protocol session with the daemon's inspector, one call at a time. */
async function withInspector<T>(url: string, use: (call: InspectorCall) => Promise<T>): Promise<T> {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  let id = 0;
  const call: InspectorCall = (method, params = {}, onEvent) =>
    new Promise((resolve, reject) => {
      const callId = ++id;
      socket.onmessage = (event) => {
        const message = JSON.parse(String(event.data)) as {
          id?: number;
          method?: string;
          params?: unknown;
          error?: { message: string };
          result?: { result?: { value?: unknown } };
        };
        if (message.method !== undefined) onEvent?.(message.method, message.params);
        else if (message.id !== callId) return;
        else if (message.error) reject(new Error(`${method}: ${message.error.message}`));
        else resolve(message.result?.result?.value);
      };
      socket.send(JSON.stringify({ id: callId, method, params }));
    });
  try {
    return await use(call);
  } finally {
    socket.close();
  }
}

const docker = await dockerAvailable();
if (!docker) {
  plan.pop();
  process.stderr.write("bench:load: no Docker engine answers: the docker part is left out\n");
} else await ensureTestImages();

const dir = await mkdtemp(join(tmpdir(), "berth-load-"));
const config = join(dir, "berth.yaml");
await writeFile(
  config,
  `listeners:
${plan.map((p) => `  - address: unix://${dir}/${p.backend}.sock\n    backend: ${p.backend}`).join("\n")}
backends:
  host:
    driver: host
    options:
      root: ${dir}/host
      isolation: bwrap
    limits:
      maxEnvironments: ${plan.find((p) => p.backend === "host")?.environments ?? 1}
  docker:
    driver: docker
logging:
  level: info
# Whatever a failed run leaves is removed when the daemon stops; what a
# daemon killed outright leaves, the next run's reconciler removes (same --instance).
removeOnShutdown: true
`,
);
const daemon = await startDaemon(["--config", config, "--log-level", "info", "--instance", "berth-load"], {
  listen: [],
  env: { NODE_OPTIONS: "--inspect=127.0.0.1:0" },
});
const pid = daemon.child.pid!;
const inspector =
  /Debugger listening on (ws:\/\/\S+)/.exec(daemon.log())?.[1] ??
  fail(`the daemon did not open its inspector:\n${daemon.log()}`);
const payload = await tarOf([{ name: "data.bin", content: Buffer.alloc(64 * 1024, 1) }]);

async function round(roundNumber: number): Promise<Record<string, unknown>> {
  const before = await daemonFigures(pid, inspector);
  const latencies: Record<string, number[]> = { exec: [], copyIn: [], copyOut: [], remove: [] };
  const errors: string[] = [];
  const timed = async (op: string, fn: () => Promise<unknown>) => {
    const started = performance.now();
    try {
      await fn();
      latencies[op].push(performance.now() - started);
    } catch (err) {
      errors.push(`${op}: ${messageOf(err)}`);
    }
  };
  const channels = plan.map((p) => openChannel(`unix://${dir}/${p.backend}.sock`));
  const setupStarted = performance.now();
  const environments = (
    await Promise.all(
      plan.map(async (p, index) => {
        const client = v1alphaClient(channels[index]);
        return Promise.all(
          Array.from({ length: p.environments }, async () => {
            const { id, layout } = await client.create({ image: p.image });
            await client.start(id);
            return { client, id, root: layout!.rootPath, backend: p.backend };
          }),
        );
      }),
    )
  ).flat();
  const setupSeconds = (performance.now() - setupStarted) / 1000;
  const deadline = Date.now() + seconds * 1000;
  let operations = 0;
  await Promise.all(
    environments.map(async ({ client, id, root, backend }) => {
      while (Date.now() < deadline) {
        await timed("exec", async () => {
          let stderr = "";
          const outcome = await client.exec(id, ["sh", "-c", "echo load"], {
            onOutput: (stream, data) => {
              if (stream === "stderr") stderr += data.toString();
            },
          });
          if (outcome.exitCode !== 0) {
            throw new Error(`${backend}: exit code ${outcome.exitCode}: ${outcome.failed ?? stderr.trim()}`);
          }
        });
        await timed("copyIn", () => client.copyIn(id, `${root}/load`, once(payload)));
        await timed("copyOut", async () => {
          const entries = await readTar(client.copyOut(id, `${root}/load/data.bin`));
          if (entries[0]?.size !== 64 * 1024) throw new Error("CopyOut returned the wrong file");
        });
        operations += 3;
      }
    }),
  );
  for (const { client, id } of environments) await timed("remove", () => client.remove(id));
  for (const channel of channels) channel.close();
  // Let closed connections and exited processes be reaped before counting.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const after = await daemonFigures(pid, inspector);
  if (snapshotDir) await heapSnapshot(inspector, join(snapshotDir, `round-${roundNumber}.heapsnapshot`));
  return {
    environments: environments.length,
    setupSeconds: Number(setupSeconds.toFixed(1)),
    operations,
    errors: errors.length,
    firstErrors: errors.slice(0, 5),
    exec: latencySummary(latencies.exec.sort((a, b) => a - b)),
    copyIn: latencySummary(latencies.copyIn.sort((a, b) => a - b)),
    copyOut: latencySummary(latencies.copyOut.sort((a, b) => a - b)),
    remove: latencySummary(latencies.remove.sort((a, b) => a - b)),
    before,
    after,
  };
}

try {
  const rounds = [];
  for (let i = 0; i < roundCount; i++) rounds.push(await round(i + 1));
  const results = {
    date: new Date().toISOString(),
    node: process.version,
    secondsPerRound: seconds,
    backends: plan.map((p) => `${p.backend} ×${p.environments}`),
    rounds,
  };
  await writeFile(resultsPath, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  const errors = rounds.reduce((sum, r) => sum + (r.errors as number), 0);
  if (errors > 0) process.exitCode = 1;
} finally {
  await daemon.stop();
  await rm(dir, { recursive: true, force: true });
}
