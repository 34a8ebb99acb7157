import assert from "node:assert/strict";
import { test } from "node:test";
import { Status } from "../../src/errors.js";
import { environmentSpec } from "../../src/protocol/common.js";
import { buildPod, extraServiceHostNames, serviceHostName } from "./pod.js";

const inputs = (services: { name: string; ports?: string[] }[]) => ({
  id: "berth-0123456789abcdef",
  instance: "berth",
  namespace: "ci",
  spec: environmentSpec({
    labelArg: "busybox",
    services: services.map((s) => ({ image: "web", env: {}, ports: [], ...s })),
  }),
  job: { privileged: false },
  template: { metadata: {}, spec: { containers: [] } },
  activeDeadlineSeconds: 3600,
  nativeSidecars: false,
  now: new Date(0),
});

test("service names from workflows become DNS-1123 container and host names", () => {
  assert.equal(serviceHostName("Redis"), "redis");
  assert.equal(serviceHostName("my_db"), "my-db");
  assert.equal(serviceHostName("_Odd..Name_"), "odd-name");
  assert.equal(serviceHostName("x".repeat(80)).length, 54);
  const pod = buildPod(inputs([{ name: "Redis", ports: ["6379", "8080:6379"] }, { name: "my_db" }]));
  const containers = pod.spec!.containers.map((c) => c.name);
  assert.deepEqual(containers, ["job", "service-redis", "service-my-db"]);
  assert.deepEqual(pod.spec!.hostAliases, [{ ip: "127.0.0.1", hostnames: ["redis", "my-db"] }]);
  assert.deepEqual(
    pod.spec!.containers[1].ports,
    [{ containerPort: 6379, protocol: "TCP" }],
    "each port once",
  );
  assert.deepEqual(extraServiceHostNames([{ name: "Redis" }, { name: "my_db" }, { name: "web" }]), ["my_db"]);
});

test("two services that would share a host name, or a name with nothing to keep, are INVALID_ARGUMENT", () => {
  assert.throws(
    () => buildPod(inputs([{ name: "my_db" }, { name: "my-db" }])),
    (err: { code?: Status; message: string }) =>
      err.code === Status.INVALID_ARGUMENT &&
      /"my_db" and "my-db" would both be host my-db/.test(err.message),
  );
  assert.throws(() => serviceHostName("__"), /no letter or digit/);
});
