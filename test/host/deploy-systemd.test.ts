/**
 * deploy/systemd: the units pass `systemd-analyze verify` and carry the
 * hardening the README promises, and socket activation serves real calls:
 * systemd-socket-activate opens the socket and starts `berth serve` on the
 * first connection, as berth.socket does.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { parse } from "yaml";
import { openChannel, v1alphaClient } from "../../src/client.js";
import { cliPath } from "../support/daemon-process.js";

const run = promisify(execFile);
const deployDir = fileURLToPath(new URL("../../../deploy/systemd/", import.meta.url));
const berthJs = fileURLToPath(new URL("../../../bin/berth.js", import.meta.url));
const activate = "/usr/bin/systemd-socket-activate";

/** `Key=value` lines of a unit file, by key (a key may repeat). */
function unitKeys(text: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (match) keys.set(match[1], [...(keys.get(match[1]) ?? []), match[2]]);
  }
  return keys;
}

describe("deploy/systemd", () => {
  test("systemd-analyze verify accepts both units", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-units-"));
    try {
      // verify checks that ExecStart's program exists: point it at this checkout's berth.
      const service = await readFile(join(deployDir, "berth.service"), "utf8");
      await writeFile(join(dir, "berth.service"), service.replaceAll("/usr/local/bin/berth", berthJs));
      await writeFile(join(dir, "berth.socket"), await readFile(join(deployDir, "berth.socket"), "utf8"));
      const { stdout, stderr } = await run("systemd-analyze", [
        "verify",
        join(dir, "berth.socket"),
        join(dir, "berth.service"),
      ]);
      assert.equal(`${stdout}${stderr}`.trim(), "", "no warnings");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("the service is hardened as the README says, and the socket is the one berth.yaml serves", async () => {
    const service = unitKeys(await readFile(join(deployDir, "berth.service"), "utf8"));
    const expect = {
      User: "berth",
      NoNewPrivileges: "yes",
      ProtectSystem: "strict",
      ProtectHome: "yes",
      PrivateTmp: "yes",
      RuntimeDirectory: "berth",
      RuntimeDirectoryPreserve: "yes",
      StateDirectory: "berth",
      ReadWritePaths: "/var/lib/berth /var/log/berth /run/berth",
      CapabilityBoundingSet: "",
      Requires: "berth.socket",
    };
    for (const [key, value] of Object.entries(expect)) assert.deepEqual(service.get(key), [value], key);
    assert.match(service.get("ExecStart")?.[0] ?? "", /berth serve --config \/etc\/berth\/berth\.yaml$/);
    const socket = unitKeys(await readFile(join(deployDir, "berth.socket"), "utf8"));
    assert.deepEqual(socket.get("ListenStream"), ["/run/berth/berth.sock"]);
    assert.deepEqual(socket.get("SocketMode"), ["0660"]);
    const config = parse(await readFile(join(deployDir, "berth.yaml"), "utf8")) as {
      listeners: { address: string }[];
    };
    assert.deepEqual(
      config.listeners.map((l) => l.address),
      [`systemd:${socket.get("FileDescriptorName")?.[0]}`],
    );
  });

  for (const [how, command] of [
    ["berth serve", [process.execPath, cliPath]],
    // The system's own Node (older than 22 here): bin/berth.js re-runs berth on the bundled Node and hands the socket down.
    ["bin/berth.js on the system's node", ["/usr/bin/node", berthJs]],
  ] as const) {
    test(
      `socket activation: ${how} serves a job on the socket systemd opened`,
      { skip: !existsSync(activate) || !existsSync(command[0]) },
      async () => {
        const dir = await mkdtemp(join(tmpdir(), "berth-activation-"));
        const socketPath = join(dir, "berth.sock");
        let child: ChildProcess | undefined;
        let log = "";
        try {
          child = spawn(
            activate,
            [
              "--listen",
              socketPath,
              "--fdname=berth",
              ...command,
              "serve",
              "--listen",
              "systemd:berth",
              "--backend-opt",
              `root=${dir}/envs`,
            ],
            { stdio: ["ignore", "ignore", "pipe"] },
          );
          child.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()));
          // systemd-socket-activate binds at once and starts berth on the first connection.
          for (let i = 0; i < 100 && !existsSync(socketPath); i++)
            await new Promise((r) => setTimeout(r, 50));
          const channel = openChannel(`unix://${socketPath}`);
          const client = v1alphaClient(channel);
          try {
            const caps = await client
              .capabilities()
              .catch((err: Error) => ({ name: `${err.message}\n${log}` }));
            assert.equal(caps.name, "host");
            const { id } = await client.create({});
            let out = "";
            const outcome = await client.exec(id, ["sh", "-c", "echo activated"], {
              onOutput: (_s, d) => (out += d.toString()),
            });
            assert.deepEqual([outcome.exitCode, out], [0, "activated\n"]);
            await client.remove(id);
          } finally {
            channel.close();
          }
          assert.match(log, /berth serving on systemd:berth/);
        } finally {
          child?.kill("SIGTERM");
          if (child && child.exitCode === null) await new Promise((resolve) => child!.once("exit", resolve));
          await rm(dir, { recursive: true, force: true });
        }
      },
    );
  }
});
