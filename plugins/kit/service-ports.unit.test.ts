import assert from "node:assert/strict";
import { test } from "node:test";
import { Status } from "../../src/errors.js";
import { parsePortSpec } from "./service-ports.js";

test("service ports as runners pass them from workflows", () => {
  assert.deepEqual(parsePortSpec("5432", "db"), [{ containerPort: 5432, protocol: "tcp" }]);
  assert.deepEqual(parsePortSpec("8080:80", "web"), [
    { hostPort: "8080", containerPort: 80, protocol: "tcp" },
  ]);
  assert.deepEqual(parsePortSpec("127.0.0.1:8080:80/udp", "web"), [
    { hostIp: "127.0.0.1", hostPort: "8080", containerPort: 80, protocol: "udp" },
  ]);
  assert.deepEqual(parsePortSpec("[::1]:8080:80", "web"), [
    { hostIp: "::1", hostPort: "8080", containerPort: 80, protocol: "tcp" },
  ]);
  assert.deepEqual(parsePortSpec("127.0.0.1::80", "web"), [
    { hostIp: "127.0.0.1", containerPort: 80, protocol: "tcp" },
  ]);
  assert.deepEqual(parsePortSpec("9000-9002:8000-8002/sctp", "r"), [
    { hostPort: "9000", containerPort: 8000, protocol: "sctp" },
    { hostPort: "9001", containerPort: 8001, protocol: "sctp" },
    { hostPort: "9002", containerPort: 8002, protocol: "sctp" },
  ]);
  assert.equal(parsePortSpec("7000-7009", "r").length, 10);
  assert.deepEqual(parsePortSpec("127.0.0.1:0:80", "web"), [
    { hostIp: "127.0.0.1", hostPort: "0", containerPort: 80, protocol: "tcp" },
  ]);
});

test("port specs berth cannot serve are INVALID_ARGUMENT naming the service and the spec", () => {
  const cases: [string, RegExp][] = [
    ["http", /is not a port specification/],
    ["0", /outside 1-65535/],
    ["0-2:80-82", /outside 1-65535/],
    ["70000", /outside 1-65535/],
    ["90-80", /reversed range/],
    ["1-3:1-2", /ranges of different lengths/],
    ["999.1.1.1:80:80", /not an IP address/],
    ["[1:2:3]:80:80", /not an IP address/],
    ["1-5000", /more than 1000 ports/],
    ["80/icmp", /is not a port specification/],
  ];
  for (const [spec, why] of cases) {
    assert.throws(
      () => parsePortSpec(spec, "svc"),
      (err: { code?: Status; message: string }) =>
        err.code === Status.INVALID_ARGUMENT &&
        err.message.startsWith(`service svc: port "${spec}"`) &&
        why.test(err.message),
      spec,
    );
  }
});
