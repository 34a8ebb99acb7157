/**
 * The job pod buildPod makes: the administrator's template, then the job's
 * backend options, then what berth needs (its labels, the keep-alive
 * command, the environment volume), which wins. Service naming is in
 * pod.unit.test.ts; this file is about the rest of the pod.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { V1Container, V1Pod } from "@kubernetes/client-node";
import type { EnvironmentSpec, ServiceSpec } from "../../src/driver.js";
import { BerthError, Status } from "../../src/errors.js";
import { environmentSpec } from "../../src/protocol/common.js";
import type { JobOptions } from "./job-options.js";
import { containerLayoutPaths as layoutPaths } from "../kit/container-layout.js";
import { labels } from "../kit/labels.js";
import { type PodInputs, buildPod, deadlineSeconds, jobContainerName } from "./pod.js";

const now = new Date("2025-01-02T03:04:05.678Z");

function inputs(
  spec: Partial<EnvironmentSpec> = {},
  job: Partial<JobOptions> = {},
  more: Partial<PodInputs> = {},
): PodInputs {
  return {
    id: "berth-0123456789abcdef",
    instance: "ci-berth",
    namespace: "ci",
    spec: environmentSpec({ image: "node:22", ...spec }),
    job: { privileged: false, ...job },
    template: { metadata: {}, spec: { containers: [] } },
    activeDeadlineSeconds: 3600,
    nativeSidecars: false,
    now,
    ...more,
  };
}

const jobContainer = (pod: V1Pod): V1Container => {
  const found = pod.spec!.containers.find((c) => c.name === jobContainerName);
  assert.ok(found, "the pod has a job container");
  return found;
};

describe("a pod without a template", () => {
  test("metadata: berth's labels and annotations, named for the environment in its namespace", () => {
    const pod = buildPod(inputs({ name: "build (ubuntu)" }));
    assert.deepEqual(
      [pod.apiVersion, pod.kind, pod.metadata!.name, pod.metadata!.namespace],
      ["v1", "Pod", "berth-0123456789abcdef", "ci"],
    );
    assert.deepEqual(pod.metadata!.labels, {
      [labels.managed]: "true",
      [labels.instance]: "ci-berth",
      [labels.environment]: "berth-0123456789abcdef",
      [labels.created]: String(Math.floor(now.getTime() / 1000)),
    });
    assert.deepEqual(pod.metadata!.annotations, {
      "berth.created-at": "2025-01-02T03:04:05.678Z",
      "berth.job-name": "build (ubuntu)",
    });
    assert.equal(pod.metadata!.ownerReferences, undefined);
    assert.equal(
      "berth.job-name" in buildPod(inputs()).metadata!.annotations!,
      false,
      "no name, no annotation",
    );
  });

  test("the job container runs the keep-alive, with the image, env, working dir and the layout's mounts", () => {
    const pod = buildPod(inputs({ env: { CI: "true", HOME: "/root" }, workingDir: "/workspace/acme" }));
    const job = jobContainer(pod);
    assert.equal(job.image, "node:22");
    assert.deepEqual(job.command, ["sh", "-c", "trap 'exit 0' TERM INT; tail -f /dev/null & wait"]);
    assert.equal(job.args, undefined);
    assert.equal(job.workingDir, "/workspace/acme");
    assert.equal(job.imagePullPolicy, undefined, "the cluster's default unless force_pull");
    assert.deepEqual(job.env, [
      { name: "CI", value: "true" },
      { name: "HOME", value: "/root" },
    ]);
    assert.deepEqual(job.securityContext, {});
    assert.deepEqual(
      job.volumeMounts!.map((m) => [m.name, m.mountPath, m.subPath]),
      [
        ["berth-environment", layoutPaths.rootPath, "workspace"],
        ["berth-environment", layoutPaths.actPath, "act"],
        ["berth-environment", layoutPaths.toolCachePath, "toolcache"],
        ["berth-environment", layoutPaths.tempPath, "tmp"],
      ],
    );
  });

  test("the pod spec: never restarted, no API token, no service links, the deadline, one emptyDir", () => {
    const { spec } = buildPod(inputs());
    assert.equal(spec!.restartPolicy, "Never");
    assert.equal(spec!.automountServiceAccountToken, false);
    assert.equal(spec!.enableServiceLinks, false);
    assert.equal(spec!.activeDeadlineSeconds, 3600);
    assert.deepEqual(spec!.volumes, [{ name: "berth-environment", emptyDir: {} }]);
    assert.deepEqual(
      [
        spec!.initContainers,
        spec!.hostAliases,
        spec!.tolerations,
        spec!.imagePullSecrets,
        spec!.nodeSelector,
      ],
      [[], [], [], [], {}],
    );
    assert.equal(spec!.serviceAccountName, undefined);
  });

  test("the image is the job's, else label_arg; with neither it is INVALID_ARGUMENT", () => {
    assert.equal(jobContainer(buildPod(inputs({ image: "", labelArg: "busybox" }))).image, "busybox");
    assert.equal(jobContainer(buildPod(inputs({ image: "alpine", labelArg: "busybox" }))).image, "alpine");
    assert.throws(
      () => buildPod(inputs({ image: "" })),
      (err: unknown) =>
        err instanceof BerthError &&
        err.code === Status.INVALID_ARGUMENT &&
        /needs an image: set the job's container image/.test(err.message),
    );
  });

  test("force_pull makes every container Always pull", () => {
    const pod = buildPod(
      inputs({ forcePull: true, services: [{ name: "db", image: "postgres", env: {}, ports: [] }] }),
    );
    assert.deepEqual(
      pod.spec!.containers.map((c) => c.imagePullPolicy),
      ["Always", "Always"],
    );
  });

  test("cap_add and cap_drop become the job container's capabilities", () => {
    const job = jobContainer(buildPod(inputs({ capAdd: ["NET_ADMIN"], capDrop: ["ALL"] })));
    assert.deepEqual(job.securityContext, { capabilities: { add: ["NET_ADMIN"], drop: ["ALL"] } });
  });

  test("an owner reference, when given, is the pod's", () => {
    const owner = { apiVersion: "v1", kind: "Pod", name: "berth-0", uid: "1234", controller: false };
    assert.deepEqual(buildPod(inputs({}, {}, { owner })).metadata!.ownerReferences, [owner]);
  });
});

describe("services", () => {
  const services: ServiceSpec[] = [
    { name: "db", image: "postgres:17", env: { POSTGRES_PASSWORD: "pw" }, ports: ["5432"] },
    { name: "web", image: "nginx", env: {}, ports: [] },
  ];

  test("as containers after the job container, with their env and no restart policy", () => {
    const pod = buildPod(inputs({ services }));
    assert.deepEqual(
      pod.spec!.containers.map((c) => [c.name, c.image, c.restartPolicy]),
      [
        ["job", "node:22", undefined],
        ["service-db", "postgres:17", undefined],
        ["service-web", "nginx", undefined],
      ],
    );
    assert.deepEqual(pod.spec!.containers[1].env, [{ name: "POSTGRES_PASSWORD", value: "pw" }]);
    assert.deepEqual(pod.spec!.initContainers, []);
  });

  test("as native sidecars: init containers that keep running, the job container alone in containers", () => {
    const pod = buildPod(inputs({ services }, {}, { nativeSidecars: true }));
    assert.deepEqual(
      pod.spec!.containers.map((c) => c.name),
      ["job"],
    );
    assert.deepEqual(
      pod.spec!.initContainers!.map((c) => [c.name, c.restartPolicy]),
      [
        ["service-db", "Always"],
        ["service-web", "Always"],
      ],
    );
  });
});

describe("the job's backend options", () => {
  test("each lands where it belongs", () => {
    const pod = buildPod(
      inputs(
        {},
        {
          serviceAccount: "builder",
          runtimeClass: "gvisor",
          nodeSelector: { disk: "ssd" },
          tolerations: [{ key: "gpu", operator: "Exists" }],
          imagePullSecrets: ["regcred"],
          resources: { limits: { memory: "2Gi" } },
          labels: { team: "ci" },
          annotations: { "example.com/cost-centre": "42" },
          privileged: true,
        },
      ),
    );
    const spec = pod.spec!;
    assert.equal(spec.serviceAccountName, "builder");
    assert.equal(spec.automountServiceAccountToken, undefined, "a chosen service account gets its token");
    assert.equal(spec.runtimeClassName, "gvisor");
    assert.deepEqual(spec.nodeSelector, { disk: "ssd" });
    assert.deepEqual(spec.tolerations, [{ key: "gpu", operator: "Exists" }]);
    assert.deepEqual(spec.imagePullSecrets, [{ name: "regcred" }]);
    const job = jobContainer(pod);
    assert.deepEqual(job.resources, { limits: { memory: "2Gi" } });
    assert.deepEqual(job.securityContext, { privileged: true });
    assert.equal(pod.metadata!.labels!.team, "ci");
    assert.equal(pod.metadata!.annotations!["example.com/cost-centre"], "42");
  });
});

describe("the administrator's template", () => {
  const template: PodInputs["template"] = {
    metadata: {
      labels: { team: "platform", [labels.managed]: "no", [labels.instance]: "someone-else" },
      annotations: { "example.com/owner": "platform", "berth.created-at": "long ago" },
    },
    spec: {
      containers: [
        {
          name: "job",
          image: "ignored",
          command: ["/bin/entrypoint"],
          args: ["--serve"],
          imagePullPolicy: "IfNotPresent",
          workingDir: "/srv",
          env: [{ name: "FROM_TEMPLATE", value: "1" }],
          resources: { requests: { cpu: "1" } },
          securityContext: { runAsUser: 1000, capabilities: { drop: ["NET_RAW"] } },
          volumeMounts: [{ name: "cache", mountPath: "/cache" }],
        },
        { name: "proxy", image: "envoy" },
      ],
      initContainers: [{ name: "setup", image: "busybox" }],
      volumes: [{ name: "cache", emptyDir: {} }],
      nodeSelector: { pool: "ci", disk: "hdd" },
      tolerations: [{ key: "ci", operator: "Exists" }],
      imagePullSecrets: [{ name: "mirror" }],
      hostAliases: [{ ip: "10.0.0.1", hostnames: ["mirror.local"] }],
      serviceAccountName: "ci-runner",
      runtimeClassName: "kata",
      automountServiceAccountToken: true,
      enableServiceLinks: true,
      restartPolicy: "Always",
      activeDeadlineSeconds: 600,
      priorityClassName: "ci-low",
    },
  };

  test("its job container is refined, not replaced; berth's command, image and mounts win", () => {
    const job = jobContainer(
      buildPod(inputs({ env: { CI: "true" }, capAdd: ["SYS_PTRACE"] }, {}, { template })),
    );
    assert.equal(job.image, "node:22");
    assert.deepEqual(job.command, ["sh", "-c", "trap 'exit 0' TERM INT; tail -f /dev/null & wait"]);
    assert.equal(job.args, undefined);
    assert.equal(job.imagePullPolicy, "IfNotPresent");
    assert.equal(job.workingDir, "/srv", "the template's, since the job names none");
    assert.deepEqual(job.env, [
      { name: "FROM_TEMPLATE", value: "1" },
      { name: "CI", value: "true" },
    ]);
    assert.deepEqual(job.resources, { requests: { cpu: "1" } });
    assert.deepEqual(job.securityContext, {
      runAsUser: 1000,
      capabilities: { add: ["SYS_PTRACE"], drop: ["NET_RAW"] },
    });
    assert.deepEqual(
      job.volumeMounts!.map((m) => m.mountPath),
      ["/cache", "/workspace", "/var/run/act", "/opt/hostedtoolcache", "/tmp"],
    );
  });

  test("its other containers, init containers, volumes and lists stay; the job's are added", () => {
    const pod = buildPod(
      inputs(
        { services: [{ name: "db", image: "postgres", env: {}, ports: [] }] },
        { tolerations: [{ key: "gpu" }], imagePullSecrets: ["regcred"], nodeSelector: { disk: "ssd" } },
        { template },
      ),
    );
    const spec = pod.spec!;
    assert.deepEqual(
      spec.containers.map((c) => c.name),
      ["job", "proxy", "service-db"],
    );
    assert.deepEqual(
      spec.initContainers!.map((c) => c.name),
      ["setup"],
    );
    assert.deepEqual(
      spec.volumes!.map((v) => v.name),
      ["cache", "berth-environment"],
    );
    assert.deepEqual(spec.tolerations, [{ key: "ci", operator: "Exists" }, { key: "gpu" }]);
    assert.deepEqual(spec.imagePullSecrets, [{ name: "mirror" }, { name: "regcred" }]);
    assert.deepEqual(spec.nodeSelector, { pool: "ci", disk: "ssd" }, "the job's key over the template's");
    assert.deepEqual(spec.hostAliases, [
      { ip: "10.0.0.1", hostnames: ["mirror.local"] },
      { ip: "127.0.0.1", hostnames: ["db"] },
    ]);
    assert.equal(spec.priorityClassName, "ci-low");
  });

  test("its settings are kept where berth has no say, and overridden where it has", () => {
    const spec = buildPod(inputs({}, {}, { template })).spec!;
    assert.equal(spec.serviceAccountName, "ci-runner");
    assert.equal(spec.runtimeClassName, "kata");
    assert.equal(spec.automountServiceAccountToken, true, "the template may want a token");
    assert.equal(spec.enableServiceLinks, true);
    assert.equal(spec.restartPolicy, "Never");
    assert.equal(spec.activeDeadlineSeconds, 600, "the shorter deadline of the two");
    const job = buildPod(
      inputs({}, { serviceAccount: "builder", runtimeClass: "gvisor" }, { template }),
    ).spec!;
    assert.deepEqual([job.serviceAccountName, job.runtimeClassName], ["builder", "gvisor"]);
  });

  test("berth's labels and annotations win over the template's; the template's others stay", () => {
    const { metadata } = buildPod(inputs({}, { labels: { team: "ci" } }, { template }));
    assert.deepEqual(metadata!.labels, {
      team: "ci",
      [labels.managed]: "true",
      [labels.instance]: "ci-berth",
      [labels.environment]: "berth-0123456789abcdef",
      [labels.created]: String(Math.floor(now.getTime() / 1000)),
    });
    assert.deepEqual(metadata!.annotations, {
      "example.com/owner": "platform",
      "berth.created-at": now.toISOString(),
    });
  });

  test("the job's working_dir and privileged win over the template's job container", () => {
    const job = jobContainer(
      buildPod(inputs({ workingDir: "/workspace/x" }, { privileged: true }, { template })),
    );
    assert.equal(job.workingDir, "/workspace/x");
    assert.deepEqual(job.securityContext, {
      runAsUser: 1000,
      capabilities: { drop: ["NET_RAW"] },
      privileged: true,
    });
  });
});

describe("deadlineSeconds", () => {
  test("the runner's timeout plus a minute, rounded up, never past the configured bound", () => {
    assert.equal(deadlineSeconds(undefined, 21600), 21600);
    assert.equal(deadlineSeconds(0, 21600), 21600);
    assert.equal(deadlineSeconds(-5000, 21600), 21600);
    assert.equal(deadlineSeconds(1, 21600), 61);
    assert.equal(deadlineSeconds(90_000, 21600), 150);
    assert.equal(deadlineSeconds(90_001, 21600), 151);
    assert.equal(deadlineSeconds(24 * 3600 * 1000, 21600), 21600);
  });
});
