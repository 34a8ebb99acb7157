/** The daemon as a server: listeners, TLS, health, reflection, limits and shutdown, through real sockets. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { lstat, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Client, credentials, Metadata } from "@grpc/grpc-js";
import { Status, createClient } from "nice-grpc";
import { HealthDefinition } from "nice-grpc-server-health";
import protobuf from "protobufjs";
import { openChannel, v1alphaClient } from "../../src/client.js";
import { makeTestPki, type TestPki } from "../support/certificates.js";
import {
  type DaemonProcess,
  cliPath,
  startDaemon,
  startDaemonExpectingFailure,
} from "../support/daemon-process.js";
import { tarOf } from "../support/tar.js";

const SERVING = 1;
const NOT_SERVING = 2;

async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("a serving daemon", () => {
  let daemon: DaemonProcess;
  before(async () => {
    daemon = await startDaemon(["--backend-opt", "isolation=bwrap"]);
  });
  after(async () => {
    await daemon.stop();
  });

  test("reports SERVING on the empty health service name", async () => {
    const channel = openChannel(daemon.address);
    const health = createClient(HealthDefinition, channel);
    assert.equal((await health.check({ service: "" })).status, SERVING);
    channel.close();
  });

  test("creates its socket with mode 0660", async () => {
    const path = daemon.address.replace(/^unix:\/\//, "");
    const stat = await lstat(path);
    assert.ok(stat.isSocket());
    assert.equal(stat.mode & 0o777, 0o660);
  });

  for (const reflection of ["v1", "v1alpha"])
    test(`lists both plugin services through server reflection (grpc.reflection.${reflection}, as older grpcurl asks)`, async () => {
      const client = new Client(daemon.address, credentials.createInsecure());
      const call = client.makeBidiStreamRequest(
        `/grpc.reflection.${reflection}.ServerReflection/ServerReflectionInfo`,
        (request: Buffer) => request,
        (response: Buffer) => response,
        new Metadata(),
      );
      // ServerReflectionRequest { list_services (7) = "" }
      call.write(Buffer.from([0x3a, 0x00]));
      call.end();
      const names: string[] = [];
      for await (const response of call as AsyncIterable<Buffer>) {
        const reader = protobuf.Reader.create(response);
        while (reader.pos < reader.len) {
          const tag = reader.uint32();
          if (tag >>> 3 !== 6) {
            reader.skipType(tag & 7);
            continue;
          }
          // list_services_response (6) { service (1) { name (1) } }
          const list = protobuf.Reader.create(reader.bytes());
          while (list.pos < list.len) {
            list.uint32();
            const service = protobuf.Reader.create(list.bytes());
            service.uint32();
            names.push(service.string());
          }
        }
      }
      client.close();
      assert.deepEqual(names.sort(), ["plugin.v1.BackendPlugin", "plugin.v1alpha.BackendPlugin"]);
    });

  test("accepts messages above gRPC's 4 MiB default (runners send up to 32 MiB)", async () => {
    const channel = openChannel(daemon.address);
    const client = v1alphaClient(channel);
    const { id, layout } = await client.create({});
    const bigEntry = await tarOf([{ name: "eight-mib", content: Buffer.alloc(8 * 1024 * 1024, 7) }]);
    async function* oneBigChunk() {
      yield { environmentId: id, destPath: `${layout!.rootPath}/big`, data: bigEntry };
    }
    await client.raw.copyIn(oneBigChunk());
    let size = 0;
    for await (const chunk of client.copyOut(id, `${layout!.rootPath}/big/eight-mib`)) size += chunk.length;
    assert.ok(size > 8 * 1024 * 1024);
    await client.remove(id);
    channel.close();
  });

  test("malformed messages, unknown fields and oversized messages get a status; the daemon keeps serving", async () => {
    const raw = new Client(daemon.address, credentials.createInsecure(), {
      "grpc.max_send_message_length": 80 * 1024 * 1024,
    });
    const unary = (method: string, payload: Buffer) =>
      new Promise<{ code: number; details: string } | Buffer>((resolve) => {
        raw.makeUnaryRequest(
          method,
          (bytes: Buffer) => bytes,
          (bytes: Buffer) => bytes,
          payload,
          new Metadata(),
          {},
          (err, value) => resolve(err ? { code: err.code, details: err.details } : (value as Buffer)),
        );
      });
    try {
      // Not protobuf at all: a field tag with wire type 7 (there is none).
      const garbage = await unary(
        "/plugin.v1alpha.BackendPlugin/Create",
        Buffer.from([0x0f, 0xff, 0xff, 0xff]),
      );
      assert.ok(
        !Buffer.isBuffer(garbage) &&
          garbage.code === 3 /* INVALID_ARGUMENT: the client's fault, not berth's */ &&
          /request to plugin\.v1alpha\.BackendPlugin\/Create is not a valid protobuf message/.test(
            garbage.details,
          ),
        JSON.stringify(garbage),
      );
      // The same in a stream: a CopyIn whose chunk does not decode.
      const stream = await new Promise<{ code: number; details: string }>((resolve) => {
        const call = raw.makeClientStreamRequest(
          "/plugin.v1.BackendPlugin/CopyIn",
          (bytes: Buffer) => bytes,
          (bytes: Buffer) => bytes,
          new Metadata(),
          {},
          (err) => resolve({ code: err?.code ?? 0, details: err?.details ?? "answered OK" }),
        );
        call.write(Buffer.from([0x0f, 0xff]));
        call.end();
      });
      assert.equal(stream.code, 3, JSON.stringify(stream));
      assert.match(
        stream.details,
        /request to plugin\.v1\.BackendPlugin\/CopyIn is not a valid protobuf message/,
      );
      // A field berth does not know (number 99) is skipped, as protobuf says: the call works.
      const unknownField = Buffer.from([0x9a, 0x06, 0x03, 0x61, 0x62, 0x63]);
      assert.ok(Buffer.isBuffer(await unary("/plugin.v1alpha.BackendPlugin/Capabilities", unknownField)));
      // Over the 64 MiB cap.
      const huge = await unary(
        "/plugin.v1alpha.BackendPlugin/Create",
        Buffer.alloc(65 * 1024 * 1024 + 16, 0),
      );
      assert.ok(!Buffer.isBuffer(huge) && huge.code === 8 /* RESOURCE_EXHAUSTED */, JSON.stringify(huge));
    } finally {
      raw.close();
    }
    const channel = openChannel(daemon.address);
    assert.equal((await v1alphaClient(channel).capabilities()).name, "host", "still serving");
    channel.close();
  });

  test("keeps a silent Exec alive across client keepalive pings", async () => {
    const channel = openChannel(daemon.address);
    // Far more frequent pings than the runners' 30 s, so a few land during the call.
    const { createChannel } = await import("nice-grpc");
    const pinging = createChannel(daemon.address, undefined, {
      "grpc.keepalive_time_ms": 500,
      "grpc.keepalive_timeout_ms": 1000,
      "grpc.keepalive_permit_without_calls": 1,
    });
    const client = v1alphaClient(pinging);
    const { id } = await client.create({});
    const outcome = await client.exec(id, ["sh", "-c", "sleep 3; echo awake"]);
    assert.equal(outcome.exitCode, 0);
    await client.remove(id);
    pinging.close();
    channel.close();
  });
});

describe("unix socket paths", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-sockets-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("a regular file at the socket path stops startup and stays untouched", async () => {
    const path = join(dir, "taken.sock");
    await writeFile(path, "precious");
    const { code, stderr } = await startDaemonExpectingFailure(["--listen", `unix://${path}`]);
    assert.notEqual(code, 0);
    assert.match(stderr, /exists and is not a socket/);
    assert.equal(await readFile(path, "utf8"), "precious");
  });

  test("a symlink at the socket path is neither followed nor removed", async () => {
    const target = join(dir, "target-file");
    await writeFile(target, "target");
    const path = join(dir, "link.sock");
    await symlink(target, path);
    const { code, stderr } = await startDaemonExpectingFailure(["--listen", `unix://${path}`]);
    assert.notEqual(code, 0);
    assert.match(stderr, /is a symlink/);
    assert.ok((await lstat(path)).isSymbolicLink());
    assert.equal(await readFile(target, "utf8"), "target");
  });

  test("a stale socket (nothing listening) is replaced; a live one is refused", async () => {
    const path = join(dir, "stale.sock");
    // A socket file whose server is gone: bind, then kill the process that owns it.
    execFileSync(process.execPath, [
      "-e",
      `require("net").createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`,
    ]);
    assert.ok((await lstat(path)).isSocket());
    const first = await startDaemon([], { listen: [`unix://${path}`] });
    const refused = await startDaemonExpectingFailure(["--listen", `unix://${path}`]);
    assert.match(refused.stderr, /another server is already listening/);
    assert.equal(await first.stop(), 0);
    await assert.rejects(lstat(path), { code: "ENOENT" }, "the socket file is removed on shutdown");
  });
});

describe("TCP listeners", () => {
  let pki: TestPki;
  before(() => {
    pki = makeTestPki();
  });
  after(async () => {
    await rm(pki.dir, { recursive: true, force: true });
  });

  test("plain TCP is refused without --insecure, and on a non-loopback address even with it", async () => {
    const plain = await startDaemonExpectingFailure(["--listen", "tcp://127.0.0.1:0"]);
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr, /TCP without TLS/);
    const exposed = await startDaemonExpectingFailure(["--listen", "tcp://0.0.0.0:0", "--insecure"]);
    assert.notEqual(exposed.code, 0);
    assert.match(exposed.stderr, /refusing plain TCP on 0\.0\.0\.0/);
  });

  test("plain TCP with --insecure on loopback serves", async () => {
    const port = await freePort();
    const daemon = await startDaemon(["--insecure"], { listen: [`tcp://127.0.0.1:${port}`] });
    const channel = openChannel(daemon.address);
    assert.equal((await v1alphaClient(channel).capabilities()).name, "host");
    channel.close();
    assert.equal(await daemon.stop(), 0);
  });

  test("mutual TLS: the right client certificate works; none, or another CA's, is refused", async () => {
    const port = await freePort();
    const daemon = await startDaemon(
      ["--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-client-ca", pki.ca],
      { listen: [`tcp://127.0.0.1:${port}`] },
    );
    try {
      const ask = async (tls: { ca: string; cert?: string; key?: string }) => {
        const channel = openChannel(daemon.address, tls);
        try {
          return (await v1alphaClient(channel).capabilities()).name;
        } finally {
          channel.close();
        }
      };
      assert.equal(await ask({ ca: pki.ca, cert: pki.clientCert, key: pki.clientKey }), "host");
      await assert.rejects(ask({ ca: pki.ca }), /UNAVAILABLE/);
      await assert.rejects(ask({ ca: pki.ca, cert: pki.strangerCert, key: pki.strangerKey }), /UNAVAILABLE/);
    } finally {
      await daemon.stop();
    }
  });
});

describe("shutdown", () => {
  test("SIGTERM reports NOT_SERVING, lets an in-flight Exec finish, then exits 0 and removes the socket", async () => {
    const daemon = await startDaemon(["--shutdown-grace", "20"]);
    const channel = openChannel(daemon.address);
    const health = createClient(HealthDefinition, channel);
    const statuses: number[] = [];
    // The watch ends with an error when the server goes away; which one is checked below.
    let watchEnd: { code?: Status; details?: string } | undefined;
    const watching = (async () => {
      try {
        for await (const update of health.watch({ service: "" })) statuses.push(update.status);
      } catch (err) {
        watchEnd = err as { code?: Status; details?: string };
      }
    })();
    const client = v1alphaClient(channel);
    const { id } = await client.create({});
    let stdout = "";
    const exec = client.exec(id, ["sh", "-c", "echo started; sleep 1; echo finished"], {
      onOutput: (_s, data) => {
        stdout += data.toString();
        if (data.toString().includes("started")) daemon.child.kill("SIGTERM");
      },
    });
    const outcome = await exec;
    assert.equal(outcome.exitCode, 0);
    assert.equal(stdout, "started\nfinished\n", "the in-flight Exec ran to its end");
    const code = await daemon.stop();
    await watching;
    channel.close();
    assert.equal(code, 0);
    assert.deepEqual(statuses.slice(0, 2), [SERVING, NOT_SERVING]);
    assert.ok(
      watchEnd === undefined || watchEnd.code === Status.UNAVAILABLE || watchEnd.code === Status.CANCELLED,
      `the health watch ended because the server went away, not with ${JSON.stringify(watchEnd)}`,
    );
    await assert.rejects(lstat(daemon.address.replace(/^unix:\/\//, "")), { code: "ENOENT" });
  });
});

describe("the CLI", () => {
  test("berth run streams output and exits with the command's exit code", async () => {
    const daemon = await startDaemon();
    try {
      const { spawnSync } = await import("node:child_process");
      const run = spawnSync(
        process.execPath,
        [cliPath, "run", "--target", daemon.address, "--", "sh", "-c", "echo out; echo err >&2; exit 7"],
        {
          encoding: "utf8",
        },
      );
      assert.equal(run.status, 7);
      assert.equal(run.stdout, "out\n");
      assert.match(run.stderr, /err/);
      const v1 = spawnSync(
        process.execPath,
        [cliPath, "run", "--protocol", "v1", "--target", daemon.address, "--", "true"],
        { encoding: "utf8" },
      );
      assert.equal(v1.status, 0, v1.stderr);
    } finally {
      await daemon.stop();
    }
  });

  test("bin/berth.js runs berth on Node 22+ even when started by an older system node", async () => {
    const { spawnSync } = await import("node:child_process");
    const launcher = fileURLToPath(new URL("../../../bin/berth.js", import.meta.url));
    // The machine's own node (Debian's is 20); falls back to ours where there is none.
    const systemNode = spawnSync("sh", ["-c", "command -v /usr/bin/node || command -v node"], {
      encoding: "utf8",
    });
    const node = systemNode.stdout.trim() || process.execPath;
    const run = spawnSync(node, [launcher, "--version"], { encoding: "utf8" });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^\d+\.\d+\.\d+ \(Node\.js v(2[2-9]|[3-9]\d)\./);
  });

  test("every command's --help says what it does and shows an example", async () => {
    const { spawnSync } = await import("node:child_process");
    for (const command of [[], ["serve"], ["caps"], ["run"]]) {
      const help = spawnSync(process.execPath, [cliPath, ...command, "--help"], { encoding: "utf8" });
      assert.equal(help.status, 0);
      assert.match(help.stdout, /Example/, `berth ${command.join(" ")} --help has an example`);
    }
  });
});
