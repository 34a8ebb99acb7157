/**
 * Where a booting job pod stands, from its status alone (judgePod): ready,
 * still waiting (and on what), or failed for good (and why, naming the
 * container); and the job log's line for a pod event.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { CoreV1Event, V1ContainerStatus, V1Pod, V1PodCondition } from "@kubernetes/client-node";
import { eventLine, judgePod } from "./pod-status.js";

const scheduled: V1PodCondition = { type: "PodScheduled", status: "True" };

function container(name: string, fields: Partial<V1ContainerStatus> = {}): V1ContainerStatus {
  return { name, image: `${name}:1`, imageID: "", ready: false, restartCount: 0, ...fields };
}

const running = (name: string, ready = true) =>
  container(name, { ready, state: { running: { startedAt: new Date(0) } } });

/** A pod with a job container and these services as containers (or, native, as init containers). */
function pod(
  status: V1Pod["status"],
  { services = [] as string[], native = false }: { services?: string[]; native?: boolean } = {},
): V1Pod {
  const specs = services.map((name) => ({ name }));
  return {
    spec: {
      containers: [{ name: "job" }, ...(native ? [] : specs)],
      ...(native ? { initContainers: specs.map((c) => ({ ...c, restartPolicy: "Always" })) } : {}),
    },
    status,
  };
}

describe("ready", () => {
  test("running, scheduled, every container there and ready", () => {
    assert.deepEqual(
      judgePod(pod({ phase: "Running", conditions: [scheduled], containerStatuses: [running("job")] })),
      { state: "ready" },
    );
  });

  test("an ordinary init container of the template that exited 0 is done; one that runs is waited for", () => {
    const withInit = (initStatus: V1ContainerStatus): V1Pod => ({
      spec: { initContainers: [{ name: "setup" }], containers: [{ name: "job" }] },
      status: {
        phase: "Running",
        conditions: [scheduled],
        initContainerStatuses: [initStatus],
        containerStatuses: [running("job")],
      },
    });
    const exited = (exitCode: number) =>
      container("setup", {
        state: { terminated: { exitCode, reason: exitCode === 0 ? "Completed" : "Error" } },
      });
    assert.deepEqual(judgePod(withInit(exited(0))), { state: "ready" });
    assert.deepEqual(judgePod(withInit(running("setup", false))), {
      state: "waiting",
      why: "setup: running, not ready",
    });
    assert.deepEqual(judgePod(withInit(exited(2))), {
      state: "failed",
      reason: "container setup exited (Error, exit code 2)",
      container: "setup",
    });
  });

  test("native sidecars count: ready once they are ready too", () => {
    const services = { services: ["service-db"], native: true };
    assert.deepEqual(
      judgePod(
        pod(
          {
            phase: "Running",
            conditions: [scheduled],
            initContainerStatuses: [running("service-db")],
            containerStatuses: [running("job")],
          },
          services,
        ),
      ),
      { state: "ready" },
    );
    assert.deepEqual(
      judgePod(
        pod(
          {
            phase: "Running",
            conditions: [scheduled],
            initContainerStatuses: [running("service-db", false)],
            containerStatuses: [running("job")],
          },
          services,
        ),
      ),
      { state: "waiting", why: "service-db: running, not ready" },
    );
  });
});

describe("waiting", () => {
  test("not yet scheduled, without conditions or with PodScheduled not True", () => {
    assert.deepEqual(judgePod(pod({ phase: "Pending" })), {
      state: "waiting",
      why: "waiting to be scheduled",
    });
    assert.deepEqual(judgePod({ spec: { containers: [{ name: "job" }] } }), {
      state: "waiting",
      why: "waiting to be scheduled",
    });
    assert.deepEqual(
      judgePod(
        pod({
          phase: "Pending",
          conditions: [{ type: "PodScheduled", status: "False", reason: "SchedulerError" }],
        }),
      ),
      { state: "waiting", why: "waiting to be scheduled" },
    );
  });

  test("scheduled: each container not ready named with its waiting reason", () => {
    assert.deepEqual(
      judgePod(
        pod(
          {
            phase: "Pending",
            conditions: [scheduled],
            containerStatuses: [
              container("job", { state: { waiting: { reason: "ContainerCreating" } } }),
              container("service-db", { state: { waiting: {} } }),
              running("service-web", false),
            ],
          },
          { services: ["service-db", "service-web"] },
        ),
      ),
      {
        state: "waiting",
        why: "job: ContainerCreating, service-db: starting, service-web: running, not ready",
      },
    );
  });

  test("scheduled with no statuses yet, or running with a container status missing", () => {
    assert.deepEqual(judgePod(pod({ phase: "Pending", conditions: [scheduled] })), {
      state: "waiting",
      why: "starting containers",
    });
    assert.deepEqual(
      judgePod(
        pod(
          { phase: "Running", conditions: [scheduled], containerStatuses: [running("job")] },
          { services: ["service-db"] },
        ),
      ),
      { state: "waiting", why: "starting containers" },
      "one of two containers reported is not ready yet",
    );
  });

  test("an image pull that may yet succeed is waiting, not failed", () => {
    assert.deepEqual(
      judgePod(
        pod({
          phase: "Pending",
          conditions: [scheduled],
          containerStatuses: [container("job", { state: { waiting: { reason: "PullImage" } } })],
        }),
      ),
      { state: "waiting", why: "job: PullImage" },
    );
  });
});

describe("failed", () => {
  test("a pod that ended, with its reason and message", () => {
    assert.deepEqual(
      judgePod(pod({ phase: "Failed", reason: "DeadlineExceeded", message: "Pod was active too long" })),
      { state: "failed", reason: "the pod ended (Failed: DeadlineExceeded: Pod was active too long)" },
    );
    assert.deepEqual(judgePod(pod({ phase: "Succeeded" })), {
      state: "failed",
      reason: "the pod ended (Succeeded)",
    });
  });

  test("unschedulable, with the scheduler's message", () => {
    assert.deepEqual(
      judgePod(
        pod({
          phase: "Pending",
          conditions: [
            {
              type: "PodScheduled",
              status: "False",
              reason: "Unschedulable",
              message: "0/3 nodes are available: 3 Insufficient memory.",
            },
          ],
        }),
      ),
      {
        state: "failed",
        reason: "the pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory.",
      },
    );
  });

  for (const reason of [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
  ]) {
    test(`a container waiting with ${reason} fails the pod, naming it and its image`, () => {
      assert.deepEqual(
        judgePod(
          pod(
            {
              phase: "Pending",
              conditions: [scheduled],
              containerStatuses: [
                running("job"),
                container("service-db", { state: { waiting: { reason, message: "the kubelet's words" } } }),
              ],
            },
            { services: ["service-db"] },
          ),
        ),
        {
          state: "failed",
          reason: `container service-db (image service-db:1): ${reason}: the kubelet's words`,
          container: "service-db",
        },
      );
    });
  }

  test("a container that exited fails the pod with its reason, exit code and message", () => {
    assert.deepEqual(
      judgePod(
        pod({
          phase: "Running",
          conditions: [scheduled],
          containerStatuses: [
            container("job", {
              state: { terminated: { exitCode: 137, reason: "OOMKilled", message: " out of memory \n" } },
            }),
          ],
        }),
      ),
      {
        state: "failed",
        reason: "container job exited (OOMKilled, exit code 137: out of memory)",
        container: "job",
      },
    );
    assert.deepEqual(
      judgePod(
        pod({
          phase: "Running",
          conditions: [scheduled],
          containerStatuses: [container("job", { state: { terminated: { exitCode: 1 } } })],
        }),
      ),
      { state: "failed", reason: "container job exited (terminated, exit code 1)", container: "job" },
    );
  });

  test("a native sidecar that crashed fails the pod, though the job container is ready", () => {
    assert.deepEqual(
      judgePod(
        pod(
          {
            phase: "Running",
            conditions: [scheduled],
            initContainerStatuses: [
              container("service-db", { state: { waiting: { reason: "CrashLoopBackOff" } } }),
            ],
            containerStatuses: [running("job")],
          },
          { services: ["service-db"], native: true },
        ),
      ),
      {
        state: "failed",
        reason: "container service-db (image service-db:1): CrashLoopBackOff",
        container: "service-db",
      },
    );
  });
});

describe("event lines", () => {
  const event = (fields: Partial<CoreV1Event>): CoreV1Event => ({
    metadata: {},
    involvedObject: {},
    ...fields,
  });

  test("the container from the field path, the reason and the message", () => {
    assert.equal(
      eventLine(
        event({
          reason: "Pulling",
          message: 'Pulling image "busybox"',
          involvedObject: { fieldPath: "spec.containers{job}" },
        }),
      ),
      'job: Pulling: Pulling image "busybox"',
    );
    assert.equal(
      eventLine(
        event({
          reason: "Started",
          message: "Started",
          involvedObject: { fieldPath: "spec.initContainers{service-db}" },
        }),
      ),
      "service-db: Started: Started",
    );
  });

  test("an event of the pod itself, or without reason or message", () => {
    assert.equal(
      eventLine(event({ reason: "Scheduled", message: "Successfully assigned ci/berth-1 to node-1" })),
      "Scheduled: Successfully assigned ci/berth-1 to node-1",
    );
    assert.equal(eventLine(event({})), "Event:");
  });
});
