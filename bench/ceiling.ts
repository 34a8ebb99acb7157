/**
 * The ceiling part of the benchmark: the same client calls against
 * bench/ceiling-server.ts, a plugin.v1alpha server on berth's gRPC stack
 * with none of berth's logic (no process, no files, no tar checks). What it
 * reaches is the most any server on that stack reaches here, so berth's
 * figures over these show what berth's own pipeline costs.
 */
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { once } from "node:events";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { processMemory } from "../test/support/daemon-process.js";
import type { BenchClient } from "./clients.js";
import { type Measured, measuredCall, pathSummary } from "./paths.js";
import { defer, toMiB } from "./util.js";

const serverPath = fileURLToPath(new URL("./ceiling-server.js", import.meta.url));

export interface CeilingInput {
  client: BenchClient;
  tmp: string;
  srcDir: string;
  tree: { bytes: number };
  bigBytes: number;
  throughputRuns: number;
}

export async function measureCeiling({ client, tmp, srcDir, tree, bigBytes, throughputRuns }: CeilingInput) {
  const socket = join(tmp, "ceiling.sock");
  const server = spawn(process.execPath, [serverPath, socket, String(tree.bytes)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  defer(async () => {
    if (server.exitCode === null) {
      server.kill("SIGTERM");
      await once(server, "exit");
    }
  });
  await once(server.stdout, "data");
  const address = `unix:${socket}`;
  const id = "ceiling";
  const pid = server.pid!;
  // As for berth's daemon: VmHWM reset, then the peak over the calls against the RSS before them.
  const memory = () => processMemory(pid);
  await writeFile(`/proc/${pid}/clear_refs`, "5").catch(() => undefined);
  const before = await memory();
  const output: Measured[] = [];
  const copyIn: Measured[] = [];
  const copyOut: Measured[] = [];
  console.error(`ceiling: ${throughputRuns} runs each of exec output, copy-in and copy-out`);
  for (let run = 0; run < throughputRuns; run++) {
    const exec = await measuredCall(pid, () =>
      client.exec(address, id, ["head", "-c", String(bigBytes), "/dev/zero"]),
    );
    if (exec.stdoutBytes !== bigBytes) throw new Error(`the ceiling server sent ${exec.stdoutBytes} bytes`);
    output.push(exec);
    copyIn.push(
      await measuredCall(pid, () => client.copyIn(address, id, { dir: srcDir, dest: "/", name: "tree" })),
    );
    const out = await measuredCall(pid, () => client.copyOut(address, id, "/"));
    if (out.tarBytes !== tree.bytes) throw new Error(`the ceiling server sent ${out.tarBytes} bytes`);
    copyOut.push(out);
  }
  const after = await memory();
  return {
    serverMemory: {
      baselineRssMiB: toMiB(before.current),
      peakRssMiB: toMiB(after.peak),
      growthMiB: toMiB(after.peak - before.current),
    },
    server: "bench/ceiling-server.ts: nice-grpc over grpc-js with berth's HTTP/2 windows and data codecs",
    execThroughput: pathSummary(bigBytes, output),
    copyIn: pathSummary(tree.bytes, copyIn),
    copyOut: pathSummary(tree.bytes, copyOut),
  };
}

export type CeilingReport = Awaited<ReturnType<typeof measureCeiling>>;
