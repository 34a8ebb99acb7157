/**
 * What only the kubernetes driver does, through a real cluster (the
 * Kubernetes 1.20 of ../shared/kube): services in the pod, the pod berth
 * builds, fast failures, users, options, owner references, dropped exec
 * connections, provisioning errors.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { Status } from "nice-grpc";
import { parse, stringify } from "yaml";
import { openChannel, v1Client, v1alphaClient } from "../../src/client.js";
import {
  type DaemonProcess,
  startDaemon,
  startDaemonExpectingFailure,
} from "../../test/support/daemon-process.js";
import {
  dockerTestOptions,
  ensureTestImages,
  testImages,
  webIndexHtml,
} from "../../test/support/docker-images.js";
import { kubeTestImage, kubernetesTestOptions } from "../../test/support/kubernetes.js";
import {
  assertCutExecFails,
  assertOomKillNamed,
  execOutput,
  expectCode,
  startCancelledAt,
} from "../../test/support/rpc.js";
import { Relay } from "../../test/support/relay.js";

const kube = kubernetesTestOptions();
// Service images come from the Docker engine the cluster's kubelet runs pods on.
const docker = kube.skip ? { skip: kube.skip } : await dockerTestOptions();
if (!kube.skip && !docker.skip) await ensureTestImages();
const skip = kube.skip || docker.skip;

const run = promisify(execFile);

async function kubectl(...args: string[]): Promise<string> {
  const { stdout } = await run(kube.kubectl, ["--kubeconfig", kube.kubeconfig, ...args], {
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout;
}

interface Pod {
  metadata: {
    name: string;
    labels: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { kind: string; name: string; uid: string }[];
  };
  spec: {
    activeDeadlineSeconds?: number;
    automountServiceAccountToken?: boolean;
    hostAliases?: { ip: string; hostnames: string[] }[];
    nodeSelector?: Record<string, string>;
    containers: {
      name: string;
      image: string;
      env?: { name: string; value?: string }[];
      resources?: unknown;
      securityContext?: { capabilities?: { add?: string[]; drop?: string[] } };
    }[];
  };
}

async function podsOf(id: string): Promise<string[]> {
  const out = await kubectl("get", "pods", "-A", "-l", `berth.environment=${id}`, "-o", "name");
  return out.split("\n").filter(Boolean);
}

async function pod(id: string, namespace = "default"): Promise<Pod> {
  return JSON.parse(await kubectl("get", "pod", id, "-n", namespace, "-o", "json")) as Pod;
}

describe("kubernetes driver", { skip }, () => {
  let daemon: DaemonProcess;
  let channel: ReturnType<typeof openChannel>;
  let client: ReturnType<typeof v1alphaClient>;
  let scratch: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "berth-kube-test-"));
    const template = join(scratch, "pod-template.yaml");
    await writeFile(
      template,
      stringify({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { labels: { "from-template": "yes" }, annotations: { "template-note": "kept" } },
        spec: { containers: [{ name: "job", env: [{ name: "FROM_TEMPLATE", value: "t" }] }] },
      }),
    );
    daemon = await startDaemon([
      ...kube.serveArgs,
      "--backend-opt",
      `podTemplate=${template}`,
      "--backend-opt",
      "startTimeoutMs=60000",
    ]);
    channel = openChannel(daemon.address);
    client = v1alphaClient(channel);
  });
  after(async () => {
    channel.close();
    await daemon.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  test("a service container answers the job container by its service name and on localhost", async () => {
    const { id } = await client.create({
      image: kubeTestImage,
      services: [{ name: "web", image: testImages.web, env: { GREETING: "hi" }, ports: ["8080:80"] }],
    });
    try {
      await client.start(id);
      assert.equal(
        (await execOutput(client, id, ["wget", "-q", "-O", "-", "http://web/"])).stdout,
        webIndexHtml,
      );
      assert.equal(
        (await execOutput(client, id, ["wget", "-q", "-O", "-", "http://localhost:80/"])).stdout,
        webIndexHtml,
      );
      const spec = (await pod(id)).spec;
      const web = spec.containers.find((c) => c.name === "service-web");
      assert.ok(web, "the service runs as a container of the job's pod (no native sidecars on 1.20)");
      assert.deepEqual(web.env, [{ name: "GREETING", value: "hi" }]);
      assert.deepEqual(spec.hostAliases, [{ ip: "127.0.0.1", hostnames: ["web"] }]);
    } finally {
      await client.remove(id);
    }
    assert.deepEqual(await podsOf(id), [], "Remove leaves no pod");
  });

  test("a service named as workflows name them (My_Web) runs as service-my-web and answers by both names", async () => {
    const { id } = await client.create({
      image: kubeTestImage,
      services: [{ name: "My_Web", image: testImages.web, ports: ["80"] }],
    });
    try {
      await client.start(id);
      for (const host of ["My_Web", "my-web"]) {
        const got = await execOutput(client, id, ["wget", "-q", "-O", "-", `http://${host}/`]);
        assert.equal(got.stdout, webIndexHtml, `reached as ${host}: ${got.stderr}`);
      }
      const spec = (await pod(id)).spec;
      assert.ok(spec.containers.some((c) => c.name === "service-my-web"));
      assert.deepEqual(spec.hostAliases, [{ ip: "127.0.0.1", hostnames: ["my-web"] }]);
    } finally {
      await client.remove(id);
    }
  });

  test("the pod carries berth's labels, the template, a deadline from environment_timeout and no API token", async () => {
    const v1alpha = await client.raw.create({
      image: kubeTestImage,
      name: "build / test",
      capAdd: ["SYS_PTRACE"],
      capDrop: ["NET_RAW"],
      environmentTimeout: { seconds: 600, nanos: 0 },
    });
    const id = v1alpha.environmentId;
    try {
      const { metadata, spec } = await pod(id);
      assert.equal(metadata.labels["berth.managed"], "true");
      assert.equal(metadata.labels["berth.environment"], id);
      assert.ok(Math.abs(Number(metadata.labels["berth.created"]) - Date.now() / 1000) < 120);
      assert.equal(metadata.labels["from-template"], "yes");
      assert.equal(metadata.annotations?.["template-note"], "kept");
      assert.equal(metadata.annotations?.["berth.job-name"], "build / test");
      assert.equal(spec.activeDeadlineSeconds, 660, "environment_timeout plus a minute");
      assert.equal(spec.automountServiceAccountToken, false);
      const job = spec.containers.find((c) => c.name === "job");
      assert.deepEqual(job?.securityContext?.capabilities, { add: ["SYS_PTRACE"], drop: ["NET_RAW"] });
      await client.start(id);
      assert.equal((await execOutput(client, id, ["sh", "-c", "echo $FROM_TEMPLATE"])).stdout, "t\n");
    } finally {
      await client.remove(id);
    }
  });

  test("an image that cannot be pulled fails Start within seconds, naming the reason; Remove leaves no pod", async () => {
    const { id } = await client.create({ image: "berth-test/no-such-image:1" });
    const started = Date.now();
    await assert.rejects(
      client.start(id),
      expectCode(
        Status.FAILED_PRECONDITION,
        /container job \(image berth-test\/no-such-image:1\): (ErrImagePull|ImagePullBackOff)/,
      ),
    );
    const seconds = (Date.now() - started) / 1000;
    assert.ok(seconds < 30, `Start failed after ${seconds.toFixed(1)} s`);
    await client.remove(id);
    assert.deepEqual(await podsOf(id), []);
  });

  test("a cancelled Start stops waiting for the pod, and Remove leaves no pod", async () => {
    // A pod that boots for an hour: an init container from a second berth's template holds it.
    const template = join(scratch, "slow-boot.yaml");
    await writeFile(
      template,
      stringify({
        spec: {
          initContainers: [
            { name: "slow-boot", image: kubeTestImage, imagePullPolicy: "Never", command: ["sleep", "3600"] },
          ],
          containers: [{ name: "job" }],
        },
      }),
    );
    const slow = await startDaemon([...kube.serveArgs, "--backend-opt", `podTemplate=${template}`]);
    const slowChannel = openChannel(slow.address);
    try {
      const slowClient = v1alphaClient(slowChannel);
      const { id } = await slowClient.create({ image: kubeTestImage });
      // Cancelled once the init container runs: the pod is booting, and would for an hour.
      try {
        await startCancelledAt(slowClient, id, /slow-boot/);
      } finally {
        await slowClient.remove(id);
      }
      assert.deepEqual(await podsOf(id), []);
      assert.doesNotMatch(slow.log(), /"level":50/, "no error logged for the cancel");
    } finally {
      slowChannel.close();
      await slow.stop();
    }
  });

  test("an unschedulable pod fails Start with the scheduler's message", async () => {
    const { id } = await client.create({
      image: kubeTestImage,
      backendOptions: { node_selector: "berth-test/nowhere=true" },
    });
    try {
      await assert.rejects(client.start(id), expectCode(Status.FAILED_PRECONDITION, /cannot be scheduled/));
      assert.deepEqual((await pod(id)).spec.nodeSelector, { "berth-test/nowhere": "true" });
    } finally {
      await client.remove(id);
    }
    assert.deepEqual(await podsOf(id), []);
  });

  test("Start streams the pod's progress as it happens", async () => {
    const { id } = await client.create({ image: kubeTestImage });
    try {
      const progress: string[] = [];
      await client.start(id, (line) => progress.push(line));
      assert.ok(
        progress.some((line) => /Scheduled: Successfully assigned/.test(line)),
        progress.join("\n"),
      );
      assert.ok(
        progress.some((line) => /^job: Started/.test(line)),
        progress.join("\n"),
      );
      assert.equal(progress.at(-1), "all containers are running and ready");
    } finally {
      await client.remove(id);
    }
  });

  test("Exec runs as the container's user, and refuses another one by name instead of ignoring it", async () => {
    const { id } = await client.create({ image: kubeTestImage });
    try {
      await client.start(id);
      assert.equal((await execOutput(client, id, ["id", "-u"], { user: "0" })).stdout, "0\n");
      assert.equal((await execOutput(client, id, ["id", "-u"], { user: "root" })).stdout, "0\n");
      const other = await execOutput(client, id, ["id", "-u"], { user: "nobody" });
      assert.equal(other.stdout, "", "nothing ran");
      assert.match(other.failed ?? "", /cannot run as user nobody/);
      const v1 = v1Client(channel);
      const v1Outcome = await v1.exec(id, ["id"], { user: "nobody" });
      assert.notEqual(v1Outcome.exitCode, 0);
      assert.match(v1Outcome.errorMessage ?? "", /cannot run as user nobody/);
    } finally {
      await client.remove(id);
    }
  });

  test("backend_options: widening ones are refused unless allowed, bad values named", async () => {
    await assert.rejects(
      client.create({ image: kubeTestImage, backendOptions: { privileged: "true" } }),
      expectCode(Status.PERMISSION_DENIED, /allowPrivileged/),
    );
    await assert.rejects(
      client.create({ image: kubeTestImage, backendOptions: { namespace: "kube-system" } }),
      expectCode(Status.PERMISSION_DENIED, /allowedNamespaces/),
    );
    await assert.rejects(
      client.create({ image: kubeTestImage, backendOptions: { service_account: "default" } }),
      expectCode(Status.PERMISSION_DENIED, /allowedServiceAccounts/),
    );
    await assert.rejects(
      client.create({ image: kubeTestImage, backendOptions: { tolerations: "[{" } }),
      expectCode(Status.INVALID_ARGUMENT, /tolerations is not valid JSON/),
    );
  });

  test("resources, labels and annotations from backend_options reach the pod", async () => {
    const { id } = await client.create({
      image: kubeTestImage,
      backendOptions: {
        resources: '{"requests":{"cpu":"100m","memory":"32Mi"},"limits":{"memory":"64Mi"}}',
        labels: "team=ci",
        annotations: '{"note":"a b"}',
      },
    });
    try {
      const raw = await pod(id);
      assert.equal(raw.metadata.labels.team, "ci");
      assert.equal(raw.metadata.annotations?.note, "a b");
      assert.deepEqual(raw.spec.containers.find((c) => c.name === "job")?.resources, {
        requests: { cpu: "100m", memory: "32Mi" },
        limits: { memory: "64Mi" },
      });
    } finally {
      await client.remove(id);
    }
  });

  test("a command the OOM killer ends is named as such; a later plain SIGKILL is not", async () => {
    const { id } = await client.create({
      image: kubeTestImage,
      backendOptions: { resources: '{"limits":{"memory":"32Mi"}}' },
    });
    try {
      await client.start(id);
      await assertOomKillNamed(client, v1Client(channel), id);
    } finally {
      await client.remove(id);
    }
  });

  test("IsHealthy reports a job container that ended", async () => {
    const v1 = v1Client(channel);
    const { id } = await v1.create({ image: kubeTestImage });
    try {
      await v1.start(id);
      assert.equal((await v1.raw.isHealthy({ environmentId: id })).wait, undefined);
      // PID 1 is berth's keep-alive, which leaves on SIGTERM.
      await v1.exec(id, ["kill", "1"]);
      let last: { code?: Status; details?: string } | undefined;
      for (let i = 0; i < 100 && !last; i++) {
        last = await v1.raw.isHealthy({ environmentId: id }).then(
          () => undefined,
          (err: { code?: Status; details?: string }) => err,
        );
        if (!last) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.ok(last, "IsHealthy errors once the job container has ended");
      expectCode(Status.FAILED_PRECONDITION, /container job exited|the pod ended/)(last);
    } finally {
      await v1.remove(id);
    }
  });

  test("Remove is idempotent, also when the pod was deleted behind berth's back", async () => {
    const { id } = await client.create({ image: kubeTestImage });
    await kubectl("delete", "pod", id, "--grace-period=0", "--force", "--wait=true");
    await client.remove(id);
    await client.remove(id);
    assert.deepEqual(await podsOf(id), []);
  });
});

describe("kubernetes driver: exec connections", { skip }, () => {
  let relay: Relay;
  let daemon: DaemonProcess;
  let channel: ReturnType<typeof openChannel>;
  let scratch: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "berth-kube-relay-"));
    const config = parse(await readFile(kube.kubeconfig, "utf8")) as {
      clusters: { cluster: { server: string } }[];
    };
    const server = new URL(config.clusters[0].cluster.server);
    relay = new Relay({ host: server.hostname, port: Number(server.port || 443) });
    const port = (await relay.listen())!;
    // The API server's certificate is for 127.0.0.1, whatever the port.
    config.clusters[0].cluster.server = `https://${server.hostname}:${port}`;
    const relayed = join(scratch, "kubeconfig");
    await writeFile(relayed, stringify(config));
    daemon = await startDaemon([
      "--backend",
      "kubernetes",
      "--backend-opt",
      `kubeconfig=${relayed}`,
      "--backend-opt",
      "execKeepaliveMs=1000",
    ]);
    channel = openChannel(daemon.address);
  });
  after(async () => {
    channel.close();
    await daemon.stop();
    await relay.close();
    await rm(scratch, { recursive: true, force: true });
  });

  test("a silent command's connection carries keepalive pings", async () => {
    const client = v1alphaClient(channel);
    const { id } = await client.create({ image: kubeTestImage });
    try {
      await client.start(id);
      const exec = client.exec(id, ["sleep", "4"]);
      // Let the exec connection open, then count what berth sends while the command is silent.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const before = relay.bytesToServer;
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const sent = relay.bytesToServer - before;
      assert.equal((await exec).exitCode, 0);
      // Each ping is a small TLS record; two seconds at one ping a second is at least one.
      assert.ok(sent > 0, `berth sent ${sent} bytes to the API server during 2 s of silence`);
    } finally {
      await client.remove(id);
    }
  });

  for (const generation of ["v1alpha", "v1"] as const) {
    test(`a connection that drops mid-command ends the ${generation} Exec as a failure, not a success`, async () => {
      const client = generation === "v1" ? v1Client(channel) : v1alphaClient(channel);
      const { id } = await client.create({ image: kubeTestImage });
      try {
        await client.start(id);
        await assertCutExecFails(
          client,
          id,
          () => relay.cutAll(),
          /closed before the command's exit status arrived.*outcome is unknown/,
        );
      } finally {
        await client.remove(id);
      }
    });
  }
});

describe("kubernetes driver: owner references", { skip }, () => {
  test("job pods are owned by berth's pod and collected with it", async () => {
    const owner = `berth-owner-${randomUUID().slice(0, 8)}`;
    await kubectl(
      "run",
      owner,
      `--image=${kubeTestImage}`,
      "--image-pull-policy=Never",
      "--restart=Never",
      "--labels=berth.test=owner",
      "--",
      "sleep",
      "100000",
    );
    let daemon: DaemonProcess | undefined;
    try {
      // As in deploy/kubernetes: the downward API names berth's pod.
      process.env.POD_NAME = owner;
      process.env.POD_NAMESPACE = "default";
      daemon = await startDaemon([...kube.serveArgs, "--backend-opt", "ownerReferences=true"]);
      const channel = openChannel(daemon.address);
      const client = v1alphaClient(channel);
      const { id } = await client.create({ image: kubeTestImage });
      const ownerUid = (await kubectl("get", "pod", owner, "-o", "jsonpath={.metadata.uid}")).trim();
      assert.deepEqual(
        (await pod(id)).metadata.ownerReferences?.map((o) => [o.kind, o.name, o.uid]),
        [["Pod", owner, ownerUid]],
      );
      await kubectl("delete", "pod", owner, "--grace-period=0", "--force", "--wait=true");
      // Kubernetes 1.20's garbage collector took from 5 to over 40 s here to act on a deleted owner.
      const collectedBy = Date.now() + 180_000;
      let left = await podsOf(id);
      while (left.length > 0 && Date.now() < collectedBy) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        left = await podsOf(id);
      }
      assert.deepEqual(left, [], "the garbage collector deleted the job pod with its owner within 3 minutes");
      await client.remove(id);
      channel.close();
    } finally {
      delete process.env.POD_NAME;
      delete process.env.POD_NAMESPACE;
      await daemon?.stop();
      await kubectl("delete", "pod", owner, "--ignore-not-found", "--grace-period=0", "--force");
    }
  });
});

describe("kubernetes driver: provisioning", { skip }, () => {
  let scratch: string;
  before(async () => (scratch = await mkdtemp(join(tmpdir(), "berth-kube-provision-"))));
  after(() => rm(scratch, { recursive: true, force: true }));

  test("an API server that does not answer stops berth, naming the server", async () => {
    const config = parse(await readFile(kube.kubeconfig, "utf8")) as {
      clusters: { cluster: { server: string } }[];
    };
    config.clusters[0].cluster.server = "https://127.0.0.1:1";
    const file = join(scratch, "unreachable.kubeconfig");
    await writeFile(file, stringify(config));
    const { code, stderr } = await startDaemonExpectingFailure([
      "--backend",
      "kubernetes",
      "--backend-opt",
      `kubeconfig=${file}`,
    ]);
    assert.notEqual(code, 0);
    assert.match(
      stderr,
      /driver kubernetes: provision: cannot reach the Kubernetes API at https:\/\/127\.0\.0\.1:1/,
    );
  });

  test("an identity without the Role's permissions stops berth, naming what is missing", async () => {
    const account = `berth-nobody-${randomUUID().slice(0, 8)}`;
    await kubectl("create", "serviceaccount", account);
    try {
      // Kubernetes 1.20 gives service accounts a token Secret shortly after they appear.
      let secret = "";
      for (let i = 0; i < 100 && !secret; i++) {
        secret = (
          await kubectl("get", "serviceaccount", account, "-o", "jsonpath={.secrets[0].name}")
        ).trim();
        if (!secret) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const token = Buffer.from(
        (await kubectl("get", "secret", secret, "-o", "jsonpath={.data.token}")).trim(),
        "base64",
      ).toString();
      const config = parse(await readFile(kube.kubeconfig, "utf8")) as {
        users: { user: Record<string, unknown> }[];
      };
      config.users[0].user = { token };
      const file = join(scratch, "nobody.kubeconfig");
      await writeFile(file, stringify(config));
      const { code, stderr } = await startDaemonExpectingFailure([
        "--backend",
        "kubernetes",
        "--backend-opt",
        `kubeconfig=${file}`,
        "--backend-opt",
        "namespace=default",
      ]);
      assert.notEqual(code, 0);
      assert.match(
        stderr,
        /may not create pods, get pods, list pods, watch pods, delete pods, create pods\/exec, get pods\/exec, list events, watch events in namespace default/,
      );
      assert.match(stderr, /deploy\/kubernetes\/role\.yaml/);
    } finally {
      await kubectl("delete", "serviceaccount", account, "--ignore-not-found");
    }
  });
});

describe("kubernetes driver: restarts and orphans", { skip }, () => {
  test("after SIGKILL berth takes its pods up again; the reconciler deletes pods of its instance without a record", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-kube-restart-"));
    const config = join(dir, "berth.yaml");
    await writeFile(config, "reconciler:\n  intervalSeconds: 1\n  orphanGraceSeconds: 0\n");
    const socket = `unix://${dir}/berth.sock`;
    const args = [
      "--config",
      config,
      ...kube.serveArgs,
      "--state-dir",
      join(dir, "state"),
      "--instance",
      `test-${randomUUID().slice(0, 8)}`,
    ];
    try {
      const first = await startDaemon(args, { listen: [socket] });
      let channel = openChannel(socket);
      const kept = (await v1alphaClient(channel).create({ image: kubeTestImage })).id;
      const orphan = (await v1alphaClient(channel).create({ image: kubeTestImage })).id;
      await v1alphaClient(channel).start(kept);
      channel.close();
      first.child.kill("SIGKILL");
      await first.stop();
      const file = join(dir, "state", "environments.json");
      const state = JSON.parse(await readFile(file, "utf8")) as { environments: { id: string }[] };
      state.environments = state.environments.filter((record) => record.id !== orphan);
      await writeFile(file, JSON.stringify(state));

      const second = await startDaemon(args, { listen: [socket] });
      try {
        let left = await podsOf(orphan);
        for (let i = 0; i < 100 && left.length > 0; i++) {
          await new Promise((resolve) => setTimeout(resolve, 200));
          left = await podsOf(orphan);
        }
        assert.deepEqual(left, [], "the unrecorded pod is deleted within 20 s");
        channel = openChannel(socket);
        const client = v1alphaClient(channel);
        assert.equal((await execOutput(client, kept, ["echo", "still here"])).stdout, "still here\n");
        assert.equal((await podsOf(kept)).length, 1, "the re-adopted pod stays");
        await client.remove(kept);
        assert.deepEqual(await podsOf(kept), []);
        channel.close();
      } finally {
        await second.stop();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
