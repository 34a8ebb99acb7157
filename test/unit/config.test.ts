/** The configuration loader in process: flags over the file, and the defaults without one. */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { builtInDrivers } from "../../src/builtin-drivers.js";
import { ConfigError, loadConfig } from "../../src/config.js";
import { DriverRegistry } from "../../src/drivers.js";

const noFlags = { backendOpt: {}, listen: [] };
const drivers = new DriverRegistry(builtInDrivers);

describe("flags and the file", () => {
  test("flags win: --listen replaces the listeners, scalar flags override keys", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-config-flags-"));
    try {
      const path = join(dir, "berth.yaml");
      await writeFile(
        path,
        "listeners:\n  - address: unix:///run/x.sock\nbackends:\n  main:\n    driver: host\n    options:\n      isolation: none\nlogging:\n  level: warn\nshutdownGraceSeconds: 30\n",
      );
      const fromFile = await loadConfig({ ...noFlags, config: path }, drivers);
      assert.deepEqual(
        fromFile.listeners.map((l) => [l.address, l.backend]),
        [["unix:///run/x.sock", "main"]],
      );
      assert.equal(fromFile.logging.level, "warn");
      assert.equal(fromFile.shutdownGraceMs, 30_000);
      const overridden = await loadConfig(
        {
          ...noFlags,
          config: path,
          listen: ["unix:///run/y.sock"],
          logLevel: "debug",
          shutdownGrace: 5,
          backendOpt: { killGraceMs: "500" },
        },
        drivers,
      );
      assert.deepEqual(
        overridden.listeners.map((l) => [l.address, l.backend]),
        [["unix:///run/y.sock", "main"]],
      );
      assert.equal(overridden.logging.level, "debug");
      assert.equal(overridden.shutdownGraceMs, 5000);
      assert.deepEqual(overridden.backends[0].options, {
        root: (fromFile.backends[0].options as { root: string }).root,
        isolation: "none",
        privateDirs: ["/workspace"],
        allowedLocalRoots: [],
        keepCapabilities: false,
        killGraceMs: 500,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("without a file: the host driver on ./berth.sock, or what the flags say", async () => {
    const plain = await loadConfig(noFlags, drivers);
    assert.equal(plain.backends[0].limits.maxEnvironments, 24, "a default under Docker's 31 bridge networks");
    assert.deepEqual([plain.idleConnectionMs, plain.probesPerSecond], [300_000, 100]);
    assert.deepEqual(
      plain.listeners.map((l) => [l.address, l.backend]),
      [["unix://./berth.sock", "host"]],
    );
    assert.deepEqual(
      plain.backends.map((b) => [b.name, b.driver]),
      [["host", "host"]],
    );
    await assert.rejects(loadConfig({ ...noFlags, backendOpt: { nope: "1" } }, drivers), (err: ConfigError) =>
      /command line: --backend-opt nope: unknown option of driver host/.test(err.message),
    );
  });
});
