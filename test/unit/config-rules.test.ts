/**
 * The configuration loader's checks that need more than one key, and its
 * conversions, in process over the labelled fake driver (fakeDriverRegistry):
 * which backend a listener serves, listeners named twice, TCP without TLS,
 * flags that go together, and seconds in the file becoming the milliseconds
 * the daemon runs on. (Flags over the file and the defaults are in
 * config.test.ts; `berth validate`'s messages for typos, types and unknown
 * drivers are in test/host/config.test.ts.)
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import { ConfigError, type ServeFlags, loadConfig } from "../../src/config.js";
import { fakeDriverRegistry } from "./fake-driver.js";

const drivers = fakeDriverRegistry();

/** Loads this YAML text (or no file) with these flags; the config, or the problems. */
async function load(text: string | undefined, flags: Partial<ServeFlags> = {}) {
  const dir = await mkdtemp(join(tmpdir(), "berth-config-rules-"));
  try {
    const file = join(dir, "berth.yaml");
    if (text !== undefined) await writeFile(file, text);
    return await loadConfig(
      { backendOpt: {}, listen: [], ...(text === undefined ? {} : { config: file }), ...flags },
      drivers,
      { checkFiles: false },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function problems(text: string | undefined, flags: Partial<ServeFlags> = {}): Promise<string[]> {
  try {
    await load(text, flags);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems.map((problem) => problem.replace(/^.*berth\.yaml:/, "berth.yaml:"));
  }
  assert.fail("the configuration was accepted");
}

const oneBackend = "backends:\n  a:\n    driver: fake\n";
const twoBackends = "backends:\n  a:\n    driver: fake\n  b:\n    driver: fake\n";

describe("listeners and their backends", () => {
  test("with several backends a listener must say which it serves, and name one that exists", async () => {
    assert.deepEqual(
      await problems(
        `listeners:\n  - address: unix:///run/a.sock\n  - address: unix:///run/b.sock\n    backend: c\n${twoBackends}`,
      ),
      [
        "berth.yaml:2:5: listeners[0]: say which backend this listener serves (backend: one of a, b)",
        'berth.yaml:4:14: listeners[1].backend: no backend "c" (there are: a, b)',
      ],
    );
  });

  test("--backend-opt with several backends needs --backend; --backend picks the one it sets", async () => {
    assert.deepEqual(
      await problems(twoBackends, { backendOpt: { dyingMs: "5" }, listen: ["unix:///run/x.sock"] }),
      [
        "command line: --backend-opt: the file has several backends; say which with --backend",
        "command line: listeners[0]: say which backend this listener serves (backend: one of a, b)",
      ],
    );
    const config = await load(twoBackends, {
      backend: "b",
      backendOpt: { dyingMs: "5" },
      listen: ["unix:///run/x.sock"],
    });
    assert.deepEqual(
      config.backends.map((b) => [b.name, b.options]),
      [["b", { dyingMs: 5 }]],
    );
  });

  test("an address listed twice is named at its second place", async () => {
    assert.deepEqual(
      await problems(
        `listeners:\n  - address: unix:///run/a.sock\n  - address: unix:///run/a.sock\n${oneBackend}`,
      ),
      ["berth.yaml:3:14: listeners[1].address: unix:///run/a.sock is listed twice"],
    );
  });

  test("backends no listener serves are not started", async () => {
    const config = await load(`listeners:\n  - address: unix:///run/a.sock\n    backend: b\n${twoBackends}`);
    assert.deepEqual(
      config.backends.map((b) => b.name),
      ["b"],
    );
  });
});

describe("TCP and TLS", () => {
  test("TCP needs TLS, or insecure on loopback only", async () => {
    const [withoutTls] = await problems(`listeners:\n  - address: tcp://127.0.0.1:7000\n${oneBackend}`);
    assert.match(
      withoutTls,
      /^berth\.yaml:2:5: listeners\[0\]: listener tcp:\/\/127\.0\.0\.1:7000 is TCP without TLS/,
    );
    const loopback = await load(
      `listeners:\n  - address: tcp://127.0.0.1:7000\n    insecure: true\n${oneBackend}`,
    );
    assert.deepEqual(
      loopback.listeners.map((l) => [l.address, l.insecure, l.tls]),
      [["tcp://127.0.0.1:7000", true, undefined]],
    );
    const [wide] = await problems(`listeners:\n  - address: tcp://10.0.0.1:7000\n${oneBackend}`, {
      insecure: true,
    });
    assert.match(wide, /refusing plain TCP on 10\.0\.0\.1: --insecure is only allowed on loopback addresses/);
  });

  test("allowedClients needs clientCa; --tls-cert and --tls-key go together", async () => {
    assert.deepEqual(
      await problems(
        "listeners:\n  - address: tcp://127.0.0.1:7443\n    tls:\n      cert: /c.pem\n      key: /k.pem\n      allowedClients: [runner-1]\n" +
          oneBackend,
      ),
      [
        "berth.yaml:6:23: listeners[0].tls.allowedClients: needs clientCa: identities come from verified client certificates",
      ],
    );
    assert.deepEqual(
      await problems(undefined, { backend: "fake", tlsCert: "/c.pem", listen: ["tcp://127.0.0.1:7443"] }),
      ["command line: --tls-cert and --tls-key go together"],
    );
  });

  test("a unix listener ignores TLS flags; the socket's mode is octal", async () => {
    const config = await load(
      "listeners:\n  - address: unix:///run/a.sock\n    socket:\n      mode: '0600'\n      group: ci\n" +
        oneBackend,
      { tlsCert: "/c.pem", tlsKey: "/k.pem" },
    );
    assert.deepEqual(
      config.listeners.map((l) => [l.tls, l.socketMode, l.socketGroup]),
      [[undefined, 0o600, "ci"]],
    );
  });
});

describe("what the daemon runs on", () => {
  test("seconds become milliseconds; limits, reconciler and the state directory as given", async () => {
    const config = await load(
      [
        "listeners:",
        "  - address: unix:///run/a.sock",
        "backends:",
        "  a:",
        "    driver: fake",
        "    strictBackendOptions: true",
        "    limits:",
        "      maxEnvironments: 3",
        "      createWaitSeconds: 1.5",
        "      maxCopyInBytes: 1048576",
        "      rpcTimeoutSeconds:",
        "        exec: 3600",
        "        isHealthy: 0.25",
        "shutdownGraceSeconds: 2.5",
        "idleConnectionSeconds: 30",
        "probesPerSecond: 0",
        "stateDir: relative/state",
        "instance: ci-1",
        "removeOnShutdown: true",
        "reconciler:",
        "  intervalSeconds: 60",
        "  orphanGraceSeconds: 0",
        "  maxAgeSeconds: 86400",
        "",
      ].join("\n"),
    );
    assert.deepEqual(config.backends[0], {
      name: "a",
      driver: "fake",
      options: { dyingMs: 100 },
      strictBackendOptions: true,
      limits: {
        maxEnvironments: 3,
        createWaitMs: 1500,
        maxCopyInBytes: 1048576,
        rpcTimeoutMs: { exec: 3_600_000, isHealthy: 250 },
      },
    });
    assert.deepEqual(
      [config.shutdownGraceMs, config.idleConnectionMs, config.probesPerSecond, config.removeOnShutdown],
      [2500, 30_000, 0, true],
    );
    assert.equal(config.stateDir, resolve("relative/state"), "absolute, from where berth started");
    assert.equal(config.instance, "ci-1");
    assert.deepEqual(config.reconciler, { intervalMs: 60_000, orphanGraceMs: 0, maxAgeMs: 86_400_000 });
  });

  test("an RPC deadline for an RPC there is not, a zero deadline and a bad instance name are refused", async () => {
    const found = await problems(
      "backends:\n  a:\n    driver: fake\n    limits:\n      rpcTimeoutSeconds:\n        exce: 5\n        start: 0\ninstance: CI_1\n",
    );
    assert.equal(found.length, 3, found.join("\n"));
    assert.ok(
      found.includes("berth.yaml:6:9: backends.a.limits.rpcTimeoutSeconds.exce: unknown key"),
      found.join("\n"),
    );
    assert.ok(
      found.some((p) => p.startsWith("berth.yaml:7:16: backends.a.limits.rpcTimeoutSeconds.start: ")),
    );
    assert.ok(
      found.some((p) => p.startsWith("berth.yaml:8:11: instance: lower-case letters, digits and '-'")),
    );
    assert.deepEqual(await problems(undefined, { backend: "fake", instance: "-x" }), [
      "command line: --instance -x: lower-case letters, digits and '-', at most 63",
    ]);
  });
});
