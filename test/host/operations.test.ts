/**
 * Running berth for real: several backends in one daemon, limits, per-backend
 * health, metrics, the audit log and client allow-lists, each through a real
 * `berth serve --config` process and real sockets.
 */
import assert from "node:assert/strict";
import { copyFile, lstat, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { createClient } from "nice-grpc";
import { HealthDefinition } from "nice-grpc-server-health";
import { Status } from "nice-grpc";
import { connectivityState } from "@grpc/grpc-js";
import { openChannel, v1Client, v1alphaClient } from "../../src/client.js";
import { messageOf } from "../../src/errors.js";
import { makeTestPki, type TestPki } from "../support/certificates.js";
import { type DaemonProcess, startDaemon } from "../support/daemon-process.js";
import { once, readTar, tarOf } from "../support/tar.js";
import { withCleanup } from "../support/cleanup.js";
import { expectCode } from "../support/rpc.js";

const SERVING = 1;

/** Starts `berth serve --config` on a file written from `yaml` (DIR in it is the scratch directory). */
async function serveConfig(dir: string, yaml: string, extra: string[] = []): Promise<DaemonProcess> {
  const path = join(dir, "berth.yaml");
  await writeFile(path, yaml.replaceAll("DIR", dir));
  return startDaemon(["--config", path, ...extra], { listen: [] });
}

function metricsAddress(daemon: DaemonProcess): string {
  const match = /"metrics":"([^"]+)"/.exec(daemon.log());
  assert.ok(match, "the serving log line names the metrics address");
  return match[1];
}

async function scrape(daemon: DaemonProcess): Promise<string> {
  const response = await fetch(`http://${metricsAddress(daemon)}/metrics`);
  assert.equal(response.status, 200);
  return response.text();
}

/** The value of one series (`name{labels}` exactly as exposed), 0 if it is not there. */
function value(text: string, seriesName: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${seriesName} `));
  return line ? Number(line.slice(seriesName.length + 1)) : 0;
}

/** Series of a metric family in Prometheus text: `name{labels} value` lines. */
function series(text: string, name: string): string[] {
  return text.split("\n").filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

describe("several backends in one daemon", () => {
  let dir: string;
  let daemon: DaemonProcess;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-ops-"));
    daemon = await serveConfig(
      dir,
      `listeners:
  - address: unix://DIR/small.sock
    backend: small
  - address: unix://DIR/big.sock
    backend: big
backends:
  small:
    driver: host
    options:
      root: DIR/small
    limits:
      maxEnvironments: 1
      createWaitSeconds: 2
      maxCopyInBytes: 1000
      rpcTimeoutSeconds:
        exec: 1
  big:
    driver: host
    options:
      root: DIR/big
metrics:
  listen: 127.0.0.1:0
`,
    );
  });
  after(async () => {
    await daemon.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test("each listener creates on its backend; an id used on another listener still reaches its own", async () => {
    const small = openChannel(`unix://${dir}/small.sock`);
    const big = openChannel(`unix://${dir}/big.sock`);
    try {
      const onSmall = await v1alphaClient(small).create({});
      const onBig = await v1alphaClient(big).create({});
      assert.match(onSmall.layout?.rootPath ?? "", new RegExp(`^${dir}/small/`));
      assert.match(onBig.layout?.rootPath ?? "", new RegExp(`^${dir}/big/`));
      // Across: the small environment driven through the big backend's socket, and the other way.
      let out = "";
      const crossed = await v1alphaClient(big).exec(onSmall.id, ["sh", "-c", "pwd"], {
        onOutput: (_s, d) => (out += d.toString()),
      });
      assert.equal(crossed.exitCode, 0);
      assert.match(out, new RegExp(`^${dir}/small/`));
      await v1alphaClient(small).copyIn(
        onBig.id,
        `${onBig.layout?.rootPath}/x`,
        once(await tarOf([{ name: "f", content: "1" }])),
      );
      await v1alphaClient(small).remove(onBig.id);
      await v1alphaClient(big).remove(onSmall.id);
      await assert.rejects(v1alphaClient(small).exec(onSmall.id, ["true"]), expectCode(Status.NOT_FOUND));
    } finally {
      small.close();
      big.close();
    }
  });

  test("at maxEnvironments a Create waits for a removal, and after createWaitSeconds is RESOURCE_EXHAUSTED; maxCopyInBytes a big CopyIn; rpc deadlines end an Exec", async () => {
    const channel = openChannel(`unix://${dir}/small.sock`);
    const client = v1alphaClient(channel);
    try {
      const held = await client.create({});
      // The runner never retries Create: one at the limit waits, and gets the slot a Remove frees.
      const waiting = client.create({});
      for (let i = 0; i < 100 && !/this Create waits for one to be removed/.test(daemon.log()); i++)
        await delay(50);
      assert.match(daemon.log(), /this Create waits for one to be removed/);
      assert.match(await scrape(daemon), /^berth_creates_waiting\{backend="small"\} 1$/m);
      await client.remove(held.id);
      const first = await waiting;
      await assert.rejects(
        client.create({}),
        expectCode(
          Status.RESOURCE_EXHAUSTED,
          /backend small already has 1 environments.*maxEnvironments = 1.*none was removed within 2 s \(limits\.createWaitSeconds\)/,
        ),
      );
      await assert.rejects(
        client.exec(first.id, ["sleep", "30"]),
        expectCode(
          Status.DEADLINE_EXCEEDED,
          /exec took longer than backend small allows \(limits\.rpcTimeoutSeconds\.exec = 1\)/,
        ),
      );
      await assert.rejects(
        client.copyIn(
          first.id,
          `${first.layout?.rootPath}/big`,
          once(await tarOf([{ name: "f", content: "x".repeat(1001) }])),
        ),
        expectCode(Status.RESOURCE_EXHAUSTED, /more than 1000 bytes of files/),
      );
      assert.equal((await client.exec(first.id, ["true"])).exitCode, 0, "the environment still works");
      await client.remove(first.id);
      const second = await client.create({});
      await client.remove(second.id);
    } finally {
      channel.close();
    }
  });

  test("health has a service name per backend, and /healthz and /readyz answer", async () => {
    const channel = openChannel(`unix://${dir}/small.sock`);
    try {
      const health = createClient(HealthDefinition, channel);
      for (const service of ["", "small", "big"]) {
        assert.equal((await health.check({ service })).status, SERVING, `service "${service}"`);
      }
    } finally {
      channel.close();
    }
    const base = `http://${metricsAddress(daemon)}`;
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    assert.equal((await fetch(`${base}/nothing`)).status, 404);
  });

  test("/metrics has requests, durations, environments, copies, execs and process figures, with bounded labels", async () => {
    const channel = openChannel(`unix://${dir}/big.sock`);
    const client = v1alphaClient(channel);
    try {
      const job = async () => {
        const { id, layout } = await client.create({});
        await client.start(id);
        await client.exec(id, ["true"]);
        await client.copyIn(id, `${layout?.rootPath}/in`, once(await tarOf([{ name: "f", content: "abc" }])));
        assert.equal((await readTar(client.copyOut(id, `${layout?.rootPath}/in`))).length, 2);
        const cancel = new AbortController();
        await assert.rejects(
          client.exec(id, ["sh", "-c", "echo go; sleep 30"], {
            signal: cancel.signal,
            onOutput: () => cancel.abort(),
          }),
          /abort/i,
        );
        await client.remove(id);
      };
      const before = await scrape(daemon);
      await job();
      const text = await scrape(daemon);
      const grew = (line: string) => value(text, line) - value(before, line);
      assert.equal(
        grew('berth_rpc_requests_total{protocol="v1alpha",backend="big",rpc="Create",code="OK"}'),
        1,
      );
      assert.equal(grew('berth_rpc_duration_seconds_count{protocol="v1alpha",backend="big",rpc="Exec"}'), 2);
      assert.equal(value(text, 'berth_environments_active{backend="big"}'), 0);
      assert.equal(value(text, 'berth_environments_active{backend="small"}'), 0);
      assert.ok(
        grew('berth_copy_bytes_total{backend="big",direction="in"}') >= 1024,
        "a tar is at least 1 KiB",
      );
      assert.ok(grew('berth_copy_bytes_total{backend="big",direction="out"}') >= 1024);
      assert.equal(grew('berth_exec_duration_seconds_count{backend="big",outcome="exited"}'), 1);
      assert.equal(grew('berth_exec_duration_seconds_count{backend="big",outcome="cancelled"}'), 1);
      assert.equal(grew('berth_exec_cancellations_total{backend="big"}'), 1);
      assert.ok(value(text, "berth_process_resident_memory_bytes") > 0);
      assert.match(text, /^berth_nodejs_eventloop_lag_seconds \d/m);

      // Label sets stay bounded: a thousand more environments add no series.
      const count = (t: string) =>
        t
          .split("\n")
          .filter(
            (line) =>
              line.startsWith("berth_") &&
              !line.startsWith("berth_nodejs_") &&
              !line.startsWith("berth_process_"),
          ).length;
      const seriesBefore = count(await scrape(daemon));
      const createsBefore = value(
        await scrape(daemon),
        'berth_rpc_requests_total{protocol="v1alpha",backend="big",rpc="Create",code="OK"}',
      );
      for (let i = 0; i < 1000; i++) {
        const { id } = await client.create({});
        await client.remove(id);
      }
      const afterText = await scrape(daemon);
      assert.equal(count(afterText), seriesBefore, "the number of series did not grow");
      assert.doesNotMatch(afterText, /berth-[0-9a-f]{16}/, "no environment id in any label");
      assert.equal(
        value(afterText, 'berth_rpc_requests_total{protocol="v1alpha",backend="big",rpc="Create",code="OK"}'),
        createsBefore + 1000,
      );
      assert.ok(series(afterText, "berth_rpc_requests_total").length < 30);
    } finally {
      channel.close();
    }
  });
});

describe("audit log and client identities over mutual TLS", () => {
  let dir: string;
  let pki: TestPki;
  let daemon: DaemonProcess;
  let port: number;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-audit-"));
    pki = makeTestPki();
    port = 20000 + Math.floor(Math.random() * 20000);
    daemon = await serveConfig(
      dir,
      `listeners:
  - address: tcp://127.0.0.1:${port}
    tls:
      cert: ${pki.serverCert}
      key: ${pki.serverKey}
      clientCa: ${pki.ca}
      allowedClients: ["DNS:runner.test"]
audit:
  destination: DIR/audit.jsonl
`,
    );
  });
  after(async () => {
    await daemon.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(pki.dir, { recursive: true, force: true });
  });

  test("one record per RPC of a job, with the caller's certificate identity, and no env values", async () => {
    const secret = `s3cret-${Math.random().toString(36).slice(2)}`;
    const channel = openChannel(daemon.address, { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey });
    const client = v1Client(channel);
    try {
      const { id } = await client.create({ env: [`TOKEN=${secret}`] });
      await client.start(id);
      const caps = await client.raw.capabilities({});
      const outcome = await client.exec(id, ["sh", "-c", 'test -n "$TOKEN" && test -n "$OTHER"'], {
        env: { OTHER: secret },
      });
      assert.equal(outcome.exitCode, 0);
      await client.copyIn(
        id,
        `${caps.rootPath}/f`,
        once(await tarOf([{ name: "env", content: `X=${secret}\n` }])),
      );
      await client.raw.updateEnv({
        environmentId: id,
        srcPath: `${caps.rootPath}/f/env`,
        currentEnv: { A: secret },
      });
      await client.remove(id);
    } finally {
      channel.close();
    }
    const text = await readFile(join(dir, "audit.jsonl"), "utf8");
    assert.ok(!text.includes(secret), "the audit log holds no env value or file content");
    assert.ok(!daemon.log().includes(secret), "nor does berth's own log, at debug level");
    const records = text
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.deepEqual(
      records.map((r) => r.rpc),
      ["Create", "Start", "Capabilities", "Exec", "CopyIn", "UpdateEnv", "Remove"],
    );
    for (const record of records) {
      assert.equal(record.protocol, "v1");
      assert.equal(record.backend, "host");
      assert.equal(record.outcome, "ok");
      assert.equal(record.code, "OK");
      assert.equal(typeof record.durationMs, "number");
      assert.match(String(record.time), /^\d{4}-\d\d-\d\dT/);
      const caller = record.caller as { transport: string; subject: string; sans: string[] };
      assert.equal(caller.transport, "tls");
      assert.equal(caller.subject, "CN=client");
      assert.deepEqual(caller.sans, ["DNS:runner.test"]);
    }
    const environmentIds = new Set(
      records.filter((r) => r.rpc !== "Capabilities").map((r) => r.environmentId),
    );
    assert.equal(environmentIds.size, 1);
    const exec = records.find((r) => r.rpc === "Exec") as { argv: { sha256: string; length: number } };
    assert.match(exec.argv.sha256, /^[0-9a-f]{64}$/);
    assert.equal(exec.argv.length, 3);
  });

  test("a verified client that is not on allowedClients is refused with PERMISSION_DENIED", async () => {
    // Signed by the right CA, so the handshake succeeds; its name is not on the list.
    const sameCaOtherName = pki.otherClient;
    const refused = openChannel(daemon.address, {
      ca: pki.ca,
      cert: sameCaOtherName.cert,
      key: sameCaOtherName.key,
    });
    try {
      await assert.rejects(
        v1alphaClient(refused).capabilities(),
        expectCode(
          Status.PERMISSION_DENIED,
          /client certificate CN=other-client \(DNS:other\.test\) is not allowed/,
        ),
      );
    } finally {
      refused.close();
    }
  });
});

describe("SIGHUP", () => {
  test("a broken configuration keeps the running one; a good one switches without dropping an in-flight Exec", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-reload-"));
    const config = join(dir, "berth.yaml");
    const first = `listeners:
  - address: unix://${dir}/a.sock
backends:
  one:
    driver: host
    options:
      root: ${dir}/one
`;
    await writeFile(config, first);
    const daemon = await startDaemon(["--config", config], { listen: [] });
    const channel = openChannel(`unix://${dir}/a.sock`);
    const client = v1alphaClient(channel);
    try {
      const old = await client.create({});
      let out = "";
      let started!: () => void;
      const running = new Promise<void>((resolve) => (started = resolve));
      const exec = client.exec(old.id, ["sh", "-c", "echo started; sleep 3; echo finished"], {
        onOutput: (_s, d) => {
          out += d.toString();
          if (out.includes("started")) started();
        },
      });
      await running;

      const logged = async (pattern: RegExp) => {
        for (let i = 0; i < 100 && !pattern.test(daemon.log()); i++)
          await new Promise((r) => setTimeout(r, 50));
        assert.match(daemon.log(), pattern);
      };
      await writeFile(config, `${first}  two:\n    driver: nope\n`);
      daemon.child.kill("SIGHUP");
      await logged(/unknown driver \\"nope\\".*the new configuration was not applied/);
      assert.equal((await client.capabilities()).name, "one", "still serving the old configuration");

      await writeFile(
        config,
        `listeners:
  - address: unix://${dir}/a.sock
    backend: two
  - address: unix://${dir}/b.sock
    backend: two
backends:
  two:
    driver: host
    options:
      root: ${dir}/two
`,
      );
      daemon.child.kill("SIGHUP");
      await logged(
        /configuration reloaded; berth serving on .*a\.sock \(backend two\), .*b\.sock \(backend two\)/,
      );
      assert.equal((await exec).exitCode, 0, "the in-flight Exec finished");
      assert.equal(out, "started\nfinished\n");
      assert.equal((await client.capabilities()).name, "two");
      const fresh = await client.create({});
      assert.match(fresh.layout?.rootPath ?? "", new RegExp(`^${dir}/two/`));
      // The old environment stays with the backend that made it.
      assert.equal((await client.exec(old.id, ["true"])).exitCode, 0);
      await client.remove(old.id);
      await client.remove(fresh.id);
      const second = openChannel(`unix://${dir}/b.sock`);
      assert.equal((await v1alphaClient(second).capabilities()).name, "two");
      second.close();
    } finally {
      channel.close();
      assert.equal(await daemon.stop(), 0);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("listener security settings", () => {
  test("socket.mode, owner and group are applied to the socket file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-socket-"));
    try {
      const daemon = await serveConfig(
        dir,
        `listeners:
  - address: unix://DIR/berth.sock
    socket:
      mode: "0640"
      owner: 65534
      group: daemon
`,
      );
      try {
        const stat = await lstat(join(dir, "berth.sock"));
        assert.deepEqual([stat.mode & 0o777, stat.uid, stat.gid], [0o640, 65534, 1]);
      } finally {
        await daemon.stop();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("rotated certificate files take effect without a restart, and a rotation caught half-way keeps the old ones", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-rotation-"));
    const before = makeTestPki();
    const rotated = makeTestPki();
    const files: ["serverCert" | "serverKey" | "ca", string][] = [
      ["serverCert", "server.pem"],
      ["serverKey", "server.key"],
      ["ca", "ca.pem"],
    ];
    const install = async (pki: TestPki, which = files) => {
      for (const [key, name] of which) await copyFile(pki[key], join(dir, name));
    };
    await install(before);
    const daemon = await serveConfig(
      dir,
      `listeners:
  - address: tcp://127.0.0.1:0
    tls:
      cert: DIR/server.pem
      key: DIR/server.key
      clientCa: DIR/ca.pem
      reloadSeconds: 1
`,
    );
    /** Whether a client of that PKI is served; the error when it is not, for the assertion's message. */
    const served = async (pki: TestPki): Promise<{ ok: boolean; error?: string }> => {
      const channel = openChannel(daemon.address, { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey });
      try {
        const name = (await v1alphaClient(channel).capabilities()).name;
        return name === "host" ? { ok: true } : { ok: false, error: `answered as backend ${name}` };
      } catch (err) {
        return { ok: false, error: messageOf(err) };
      } finally {
        channel.close();
      }
    };
    const assertServed = async (pki: TestPki, expected: boolean, what: string) => {
      const { ok, error } = await served(pki);
      assert.equal(ok, expected, `${what}${error ? ` (the call failed: ${error})` : ""}`);
    };
    await withCleanup(
      async () => {
        // The very first call after startup: the listener has its certificate before it accepts.
        await assertServed(before, true, "a client of the original CA is served right after startup");
        await assertServed(rotated, false, "the new CA's client is not trusted yet");
        // Half-way: the new certificate beside the old key is no working set, so the old one stays.
        await install(rotated, files.slice(0, 1));
        const warned = /TLS files cannot be used as they are now/;
        for (let i = 0; i < 100 && !warned.test(daemon.log()); i++) await delay(50);
        assert.match(daemon.log(), warned, "the half-done rotation is logged");
        await assertServed(
          before,
          true,
          "the old certificate is still served while the rotation is half-done",
        );
        await install(rotated, files.slice(1));
        let switched = { ok: false } as Awaited<ReturnType<typeof served>>;
        for (let i = 0; i < 50 && !switched.ok; i++) {
          await delay(200);
          switched = await served(rotated);
        }
        assert.ok(
          switched.ok,
          `the new certificate and CA are in use within 10 s (last error: ${switched.error})`,
        );
        await assertServed(before, false, "the old CA's client is refused now");
      },
      async () => {
        await daemon.stop();
        for (const pki of [before, rotated]) await rm(pki.dir, { recursive: true, force: true });
        await rm(dir, { recursive: true, force: true });
      },
    );
  });
});

describe("connections and callers", () => {
  test("a connection without calls is closed after idleConnectionSeconds; the client's next call reconnects", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-idle-"));
    const daemon = await serveConfig(
      dir,
      "listeners:\n  - address: unix://DIR/berth.sock\nidleConnectionSeconds: 1\n",
    );
    const channel = openChannel(daemon.address);
    await withCleanup(
      async () => {
        const client = v1alphaClient(channel);
        assert.equal((await client.capabilities()).name, "host");
        const ready = connectivityState.READY;
        assert.equal(channel.getConnectivityState(false), ready);
        for (let i = 0; i < 50 && channel.getConnectivityState(false) === ready; i++) await delay(100);
        assert.notEqual(channel.getConnectivityState(false), ready, "berth closed the idle connection");
        assert.equal((await client.capabilities()).name, "host", "and the next call opened a new one");
      },
      async () => {
        channel.close();
        await daemon.stop();
        await rm(dir, { recursive: true, force: true });
      },
    );
  });

  test("a caller flooding health checks and Capabilities gets RESOURCE_EXHAUSTED; its Execs go on", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-probes-"));
    const daemon = await serveConfig(
      dir,
      "listeners:\n  - address: unix://DIR/berth.sock\nprobesPerSecond: 5\n",
    );
    const channel = openChannel(daemon.address);
    await withCleanup(
      async () => {
        const client = v1alphaClient(channel);
        const health = createClient(HealthDefinition, channel);
        const outcomes = await Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            (i % 2 === 0 ? health.check({ service: "" }) : client.capabilities()).then(
              () => "ok",
              (err: { code?: Status; details?: string }) => `${Status[err.code ?? 0]} ${err.details}`,
            ),
          ),
        );
        const refused = outcomes.filter((outcome) => outcome !== "ok");
        assert.ok(
          outcomes.filter((outcome) => outcome === "ok").length >= 10,
          "the burst (twice the rate) passes",
        );
        assert.ok(refused.length >= 20, `most of a flood of 40 is refused: ${refused.length}`);
        for (const outcome of refused)
          assert.match(outcome, /^RESOURCE_EXHAUSTED .* more often than berth allows \(probesPerSecond\)/);
        const { id } = await client.create({});
        assert.equal((await client.exec(id, ["true"])).exitCode, 0, "Exec is not rate-limited");
        await client.remove(id);
      },
      async () => {
        channel.close();
        await daemon.stop();
        await rm(dir, { recursive: true, force: true });
      },
    );
  });
});
