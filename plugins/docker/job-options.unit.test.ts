/**
 * What a job may ask of the docker driver through backend_options, against
 * what the administrator allowed: values parsed, anything that widens
 * privileges refused with PERMISSION_DENIED unless allowed, malformed values
 * INVALID_ARGUMENT naming the option. Also service ports as docker run -p.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BerthError, Status } from "../../src/errors.js";
import { jobOptionKeys, parseJobOptions, portBindings } from "./job-options.js";
import { type DockerOptions, dockerOptionsSchema } from "./options.js";

/** The driver's options as the config loader gives them: defaults, then these. */
const allowing = (options: Record<string, unknown> = {}): DockerOptions => dockerOptionsSchema.parse(options);

const refused = (code: Status, pattern: RegExp) => (err: unknown) => {
  assert.ok(err instanceof BerthError, `expected a BerthError, got ${String(err)}`);
  assert.equal(Status[err.code], Status[code], err.message);
  assert.match(err.message, pattern);
  return true;
};

describe("defaults and plain values", () => {
  test("no options: not privileged, nothing else set", () => {
    assert.deepEqual(parseJobOptions({}, allowing()), { privileged: false });
  });

  test("the keys a job may give are the ones parseJobOptions reads", () => {
    assert.deepEqual(
      [...jobOptionKeys],
      ["privileged", "memory", "cpus", "network_mode", "volumes", "pull_policy"],
    );
  });

  test("memory sizes: plain bytes, k/m/g in either case, an optional b, fractions", () => {
    const bytes = (memory: string) => parseJobOptions({ memory }, allowing()).memoryBytes;
    assert.equal(bytes("1048576"), 1048576);
    assert.equal(bytes("512m"), 512 * 1024 ** 2);
    assert.equal(bytes("2G"), 2 * 1024 ** 3);
    assert.equal(bytes("64kb"), 64 * 1024);
    assert.equal(bytes("1.5g"), 1.5 * 1024 ** 3);
    assert.equal(bytes(" 256M "), 256 * 1024 ** 2);
    for (const memory of ["lots", "1t", "-1m", "1 m", "1e9", ""]) {
      assert.throws(
        () => parseJobOptions({ memory }, allowing()),
        refused(Status.INVALID_ARGUMENT, /^backend_options memory=".*" is not a size such as 512m or 2g$/),
        memory,
      );
    }
  });

  test("cpus become nano-CPUs; zero, negative and non-numbers are refused", () => {
    assert.equal(parseJobOptions({ cpus: "1.5" }, allowing()).nanoCpus, 1_500_000_000);
    assert.equal(parseJobOptions({ cpus: "0.25" }, allowing()).nanoCpus, 250_000_000);
    for (const cpus of ["0", "-1", "two", "Infinity", ""]) {
      assert.throws(
        () => parseJobOptions({ cpus }, allowing()),
        refused(Status.INVALID_ARGUMENT, /cpus=".*" is not a positive number, e\.g\. 1\.5/),
        cpus,
      );
    }
  });

  test("pull_policy is always, missing or never", () => {
    for (const policy of ["always", "missing", "never"] as const) {
      assert.equal(parseJobOptions({ pull_policy: policy }, allowing()).pullPolicy, policy);
    }
    assert.throws(
      () => parseJobOptions({ pull_policy: "sometimes" }, allowing()),
      refused(Status.INVALID_ARGUMENT, /pull_policy="sometimes" is not one of always, missing, never/),
    );
  });
});

describe("what widens privileges", () => {
  test("privileged=true only where allowPrivileged; false is always fine; other words are refused", () => {
    assert.throws(
      () => parseJobOptions({ privileged: "true" }, allowing()),
      refused(Status.PERMISSION_DENIED, /privileged=true is not allowed .*\(allowPrivileged\)/),
    );
    assert.equal(
      parseJobOptions({ privileged: "true" }, allowing({ allowPrivileged: true })).privileged,
      true,
    );
    assert.equal(parseJobOptions({ privileged: "false" }, allowing()).privileged, false);
    for (const privileged of ["yes", "TRUE", "1", ""]) {
      assert.throws(
        () => parseJobOptions({ privileged }, allowing({ allowPrivileged: true })),
        refused(Status.INVALID_ARGUMENT, /privileged=".*" is not true or false/),
        privileged,
      );
    }
  });

  test("network_mode: bridge is the job's own network (unset), none, host only where allowHostNetwork", () => {
    assert.equal(parseJobOptions({ network_mode: "bridge" }, allowing()).networkMode, undefined);
    assert.equal(parseJobOptions({ network_mode: "none" }, allowing()).networkMode, "none");
    assert.throws(
      () => parseJobOptions({ network_mode: "host" }, allowing()),
      refused(Status.PERMISSION_DENIED, /network_mode=host is not allowed .*\(allowHostNetwork\)/),
    );
    assert.equal(
      parseJobOptions({ network_mode: "host" }, allowing({ allowHostNetwork: true })).networkMode,
      "host",
    );
    for (const mode of ["container:abc", "my-network", ""]) {
      assert.throws(
        () => parseJobOptions({ network_mode: mode }, allowing({ allowHostNetwork: true })),
        refused(Status.INVALID_ARGUMENT, /network_mode=".*" is not one of bridge .*, none, host/),
        mode,
      );
    }
  });

  test("volumes: host paths at or below an allowed root, and allowed named volumes", () => {
    const allowed = allowing({ allowedVolumes: ["/srv/cache", "/data/", "pip-cache"] });
    assert.deepEqual(
      parseJobOptions(
        { volumes: "/srv/cache:/cache, /srv/cache/npm:/npm:ro ,/data/x:/x:rw,pip-cache:/root/.cache/pip," },
        allowed,
      ).binds,
      ["/srv/cache:/cache", "/srv/cache/npm:/npm:ro", "/data/x:/x:rw", "pip-cache:/root/.cache/pip"],
    );
    assert.deepEqual(parseJobOptions({ volumes: "" }, allowed).binds, []);
  });

  test("volumes outside the allowed ones are PERMISSION_DENIED, also by .. or a shared prefix", () => {
    const allowed = allowing({ allowedVolumes: ["/srv/cache", "pip-cache"] });
    for (const volume of [
      "/etc:/etc",
      "/srv/cache/../../etc:/x",
      "/srv/cachet:/x",
      "/srv:/x",
      "other-volume:/x",
      "/pip-cache:/x",
    ]) {
      assert.throws(
        () => parseJobOptions({ volumes: volume }, allowed),
        refused(
          Status.PERMISSION_DENIED,
          /^backend_options volumes: .* is not in this berth's docker allowedVolumes \(\/srv\/cache, pip-cache\)$/,
        ),
        volume,
      );
    }
    assert.throws(
      () => parseJobOptions({ volumes: "/tmp:/tmp" }, allowing()),
      refused(Status.PERMISSION_DENIED, /allowedVolumes \(none\)/),
    );
  });

  test("volume entries that are not SOURCE:/container/path[:ro|rw] are INVALID_ARGUMENT", () => {
    const allowed = allowing({ allowedVolumes: ["/srv"] });
    for (const volume of ["/srv", "/srv:relative", "/srv:/x:rx", "/srv:/x:ro:extra", ":/x", "/srv:"]) {
      assert.throws(
        () => parseJobOptions({ volumes: volume }, allowed),
        refused(Status.INVALID_ARGUMENT, /volumes entry ".*" is not SOURCE:\/container\/path\[:ro\|rw\]/),
        volume,
      );
    }
  });
});

describe("service ports", () => {
  test("exposed ports and host bindings, as docker run -p makes them", () => {
    assert.deepEqual(
      portBindings(["5432", "8080:80", "127.0.0.1:8443:443", "53/udp", "[::1]:9000:9000"], "db"),
      {
        exposed: { "5432/tcp": {}, "80/tcp": {}, "443/tcp": {}, "53/udp": {}, "9000/tcp": {} },
        bindings: {
          "5432/tcp": [{ HostPort: "" }],
          "80/tcp": [{ HostPort: "8080" }],
          "443/tcp": [{ HostIp: "127.0.0.1", HostPort: "8443" }],
          "53/udp": [{ HostPort: "" }],
          "9000/tcp": [{ HostIp: "::1", HostPort: "9000" }],
        },
      },
    );
  });

  test("one container port on two host ports has both bindings; ranges expand", () => {
    assert.deepEqual(portBindings(["8080:80", "8081:80", "7000-7001:7000-7001"], "web").bindings, {
      "80/tcp": [{ HostPort: "8080" }, { HostPort: "8081" }],
      "7000/tcp": [{ HostPort: "7000" }],
      "7001/tcp": [{ HostPort: "7001" }],
    });
  });

  test("a port spec that is no port is INVALID_ARGUMENT naming the service", () => {
    assert.throws(
      () => portBindings(["http"], "web"),
      refused(Status.INVALID_ARGUMENT, /^service web: port "http" is not a port specification/),
    );
  });
});
