/** What only the docker driver does: services, health checks, cleanup, options, users, through a real engine. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Status } from "nice-grpc";
import { openChannel, v1Client, v1alphaClient } from "../../src/client.js";
import {
  type DaemonProcess,
  startDaemon,
  startDaemonExpectingFailure,
} from "../../test/support/daemon-process.js";
import {
  dockerObjectsLabelled,
  dockerTestOptions,
  ensureTestImages,
  testImages,
} from "../../test/support/docker-images.js";
import { registryAuth } from "./images.js";
import {
  assertCutExecFails,
  assertOomKillNamed,
  execOutput,
  expectCode,
  startCancelledAt,
} from "../../test/support/rpc.js";
import { Relay } from "../../test/support/relay.js";

const docker = await dockerTestOptions();
if (!docker.skip) await ensureTestImages();

describe("docker driver", docker, () => {
  let daemon: DaemonProcess;
  let channel: ReturnType<typeof openChannel>;
  let client: ReturnType<typeof v1alphaClient>;

  before(async () => {
    daemon = await startDaemon(["--backend", "docker", "--backend-opt", "serviceHealthTimeoutMs=20000"]);
    channel = openChannel(daemon.address);
    client = v1alphaClient(channel);
  });
  after(async () => {
    channel.close();
    await daemon.stop();
  });

  test("a service container answers the job container by its service name", async () => {
    const { id } = await client.create({
      image: testImages.busybox,
      services: [{ name: "web", image: testImages.web, ports: ["80"] }],
    });
    try {
      await client.start(id);
      const fetched = await execOutput(client, id, ["wget", "-q", "-O", "-", "http://web/"]);
      assert.equal(fetched.stdout, "hello from web\n");
    } finally {
      await client.remove(id);
    }
    assert.deepEqual(
      dockerObjectsLabelled(`berth.environment=${id}`),
      [],
      "Remove leaves no container, network or volume",
    );
  });

  test("Start waits for a service's health check and reports it in the progress", async () => {
    const { id } = await client.create({
      image: testImages.busybox,
      services: [{ name: "db", image: testImages.healthy }],
    });
    try {
      const progress: string[] = [];
      await client.start(id, (line) => progress.push(line));
      assert.ok(progress.includes("service db is healthy"), progress.join("\n"));
    } finally {
      await client.remove(id);
    }
  });

  test("a service that never gets healthy fails Start with its last health output, and Remove cleans up", async () => {
    const { id } = await client.create({
      image: testImages.busybox,
      services: [{ name: "db", image: testImages.unhealthy }],
    });
    await assert.rejects(
      client.start(id),
      expectCode(
        Status.FAILED_PRECONDITION,
        /service db is unhealthy: database not ready: connection refused/,
      ),
    );
    await client.remove(id);
    assert.deepEqual(dockerObjectsLabelled(`berth.environment=${id}`), []);
  });

  test("a cancelled Start stops booting (the job container never starts), and Remove leaves nothing", async () => {
    const { id } = await client.create({
      image: testImages.busybox,
      services: [{ name: "db", image: testImages.healthy }],
    });
    // The service's first health check comes a second after it starts: the cancel comes first, so
    // a Start that went on booting would have started the job container by the time it is looked at.
    try {
      const progress = await startCancelledAt(client, id, /waiting for service db/);
      await new Promise((resolve) => setTimeout(resolve, 3000));
      const state = execFileSync("docker", ["inspect", "-f", "{{.State.Status}}", `berth-${id}`], {
        encoding: "utf8",
      }).trim();
      assert.equal(
        state,
        "created",
        `the job container was not started after the cancel (${progress.join("")})`,
      );
    } finally {
      await client.remove(id);
    }
    assert.deepEqual(dockerObjectsLabelled(`berth.environment=${id}`), []);
  });

  test("Start returns the image's environment; the layout's os and arch come from the image", async () => {
    const { id, layout } = await client.create({ image: testImages.busybox });
    try {
      assert.equal(layout?.os, "Linux");
      assert.match(layout?.arch ?? "", /^(X64|ARM64)$/);
      const imageEnv = await client.start(id);
      assert.equal(imageEnv.PATH, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    } finally {
      await client.remove(id);
    }
  });

  test("Exec honours user, and names a user that does not exist", async () => {
    const { id } = await client.create({ image: testImages.busybox });
    try {
      await client.start(id);
      assert.equal((await execOutput(client, id, ["id", "-u"], { user: "nobody" })).stdout, "65534\n");
      const missing = await execOutput(client, id, ["id"], { user: "no-such-user" });
      assert.match(missing.failed ?? "", /no-such-user/);
    } finally {
      await client.remove(id);
    }
  });

  test("a Create that fails half-way leaves nothing behind", async () => {
    const before = dockerObjectsLabelled("berth.managed=true");
    // The network exists by the time the service's port is found invalid.
    await assert.rejects(
      client.create({
        image: testImages.busybox,
        services: [{ name: "web", image: testImages.web, ports: ["80:http"] }],
      }),
      expectCode(Status.INVALID_ARGUMENT, /port "80:http"/),
    );
    await assert.rejects(
      client.create({ image: testImages.busybox, services: [{ name: "bad name!", image: testImages.web }] }),
      expectCode(Status.INVALID_ARGUMENT, /not usable as a host name/),
    );
    await assert.rejects(
      client.create({
        image: testImages.busybox,
        services: [{ name: "db", image: "berth-test/no-such-service:1" }],
      }),
      /berth-test\/no-such-service:1/,
    );
    assert.deepEqual(dockerObjectsLabelled("berth.managed=true"), before);
  });

  test("an engine out of network address pools fails Create with RESOURCE_EXHAUSTED and what to do", async () => {
    const before = dockerObjectsLabelled("berth.managed=true");
    const fillers: string[] = [];
    try {
      // Docker's default pools hold 31 bridge networks; take what is left of them.
      for (let i = 0; i < 64; i++) {
        const name = `berth-test-pool-filler-${process.pid}-${i}`;
        try {
          execFileSync("docker", ["network", "create", "--label", "berth.test=1", name], { stdio: "pipe" });
        } catch (error) {
          // The pools are full: that is the point. Any other failure is the test's own.
          const stderr = String((error as { stderr?: Buffer }).stderr ?? "");
          assert.match(stderr, /address pool/, `docker network create failed otherwise: ${stderr}`);
          break;
        }
        fillers.push(name);
      }
      await assert.rejects(
        client.create({ image: testImages.busybox }),
        expectCode(Status.RESOURCE_EXHAUSTED, /address pool.*berth gc.*docker network prune/),
      );
      assert.deepEqual(dockerObjectsLabelled("berth.managed=true"), before, "nothing left behind");
    } finally {
      if (fillers.length > 0) execFileSync("docker", ["network", "rm", ...fillers], { stdio: "pipe" });
    }
  });

  test("a missing image fails Create with a message naming it", async () => {
    await assert.rejects(
      client.create({ image: "berth-test/no-such-image:1" }),
      /berth-test\/no-such-image:1/,
    );
  });

  test("backend_options: privilege-widening ones are refused unless allowed, bad values named", async () => {
    await assert.rejects(
      client.create({ image: testImages.busybox, backendOptions: { privileged: "true" } }),
      expectCode(Status.PERMISSION_DENIED, /allowPrivileged/),
    );
    await assert.rejects(
      client.create({ image: testImages.busybox, backendOptions: { volumes: "/etc:/host-etc" } }),
      expectCode(Status.PERMISSION_DENIED, /allowedVolumes/),
    );
    await assert.rejects(
      client.create({ image: testImages.busybox, backendOptions: { memory: "lots" } }),
      expectCode(Status.INVALID_ARGUMENT, /memory="lots"/),
    );
  });

  test("cap_add, cap_drop, and a service's env and ports reach the containers", async () => {
    const { environmentId: id } = await client.raw.create({
      image: testImages.busybox,
      capAdd: ["SYS_PTRACE"],
      capDrop: ["NET_RAW"],
      services: [
        { name: "web", image: testImages.web, env: { GREETING: "hi" }, ports: ["127.0.0.1:0:80", "53/udp"] },
      ],
    });
    try {
      const inspect = (name: string) =>
        (
          JSON.parse(execFileSync("docker", ["inspect", name], { encoding: "utf8" })) as {
            HostConfig: {
              CapAdd: string[];
              CapDrop: string[];
              PortBindings: Record<string, { HostIp: string }[]>;
            };
            Config: { Env: string[] };
          }[]
        )[0];
      const job = inspect(`berth-${id}`);
      assert.deepEqual(job.HostConfig.CapAdd, ["SYS_PTRACE"]);
      assert.deepEqual(job.HostConfig.CapDrop, ["NET_RAW"]);
      const web = inspect(`berth-${id}-web`);
      assert.ok(web.Config.Env.includes("GREETING=hi"));
      assert.deepEqual(Object.keys(web.HostConfig.PortBindings).sort(), ["53/udp", "80/tcp"]);
      assert.equal(web.HostConfig.PortBindings["80/tcp"][0].HostIp, "127.0.0.1");
    } finally {
      await client.remove(id);
    }
  });

  test("memory and cpus reach the container", async () => {
    const { id } = await client.create({
      image: testImages.busybox,
      backendOptions: { memory: "256m", cpus: "0.5" },
    });
    try {
      const inspect = JSON.parse(
        execFileSync("docker", ["inspect", `berth-${id}`], { encoding: "utf8" }),
      ) as {
        HostConfig: { Memory: number; NanoCpus: number };
      }[];
      assert.equal(inspect[0].HostConfig.Memory, 256 * 1024 * 1024);
      assert.equal(inspect[0].HostConfig.NanoCpus, 500_000_000);
    } finally {
      await client.remove(id);
    }
  });

  test("a command the OOM killer ends is named as such; a later plain SIGKILL is not", async () => {
    const { id } = await client.create({ image: testImages.busybox, backendOptions: { memory: "32m" } });
    try {
      await client.start(id);
      await assertOomKillNamed(client, v1Client(channel), id);
    } finally {
      await client.remove(id);
    }
  });

  test("IsHealthy reports a job container that died, with its exit code", async () => {
    const v1 = v1Client(channel);
    const { id } = await v1.create({ image: testImages.busybox });
    try {
      await v1.start(id);
      assert.equal((await v1.raw.isHealthy({ environmentId: id })).wait, undefined);
      execFileSync("docker", ["kill", `berth-${id}`]);
      await assert.rejects(
        v1.raw.isHealthy({ environmentId: id }),
        expectCode(Status.FAILED_PRECONDITION, /job container is exited \(exit code 137/),
      );
    } finally {
      await v1.remove(id);
    }
  });
});

describe("docker driver: engine connections", docker, () => {
  let relay: Relay;
  let daemon: DaemonProcess;
  let channel: ReturnType<typeof openChannel>;
  let scratch: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "berth-docker-relay-"));
    const engine = (process.env.DOCKER_HOST ?? "unix:///var/run/docker.sock").replace(/^unix:\/\//, "");
    relay = new Relay({ path: engine });
    await relay.listen(join(scratch, "docker.sock"));
    daemon = await startDaemon([
      "--backend",
      "docker",
      "--backend-opt",
      `host=unix://${join(scratch, "docker.sock")}`,
    ]);
    channel = openChannel(daemon.address);
  });
  after(async () => {
    channel.close();
    await daemon.stop();
    await relay.close();
    await rm(scratch, { recursive: true, force: true });
  });

  for (const generation of ["v1alpha", "v1"] as const) {
    test(`a connection that drops mid-command ends the ${generation} Exec as a failure, not a success`, async () => {
      const client = generation === "v1" ? v1Client(channel) : v1alphaClient(channel);
      const { id } = await client.create({ image: testImages.busybox });
      try {
        await client.start(id);
        await assertCutExecFails(
          client,
          id,
          () => relay.cutAll(),
          /dropped while the command was running.*; its outcome is unknown, so berth stops the command/,
        );
      } finally {
        await client.remove(id);
      }
    });
  }
});

describe("docker driver without an engine", () => {
  test("provisioning names the engine it cannot reach, and berth does not start", async () => {
    const { code, stderr } = await startDaemonExpectingFailure([
      "--backend",
      "docker",
      "--backend-opt",
      "host=unix:///nonexistent/docker.sock",
    ]);
    assert.notEqual(code, 0);
    assert.match(
      stderr,
      /driver docker: provision: cannot reach the Docker engine at unix:\/\/\/nonexistent\/docker\.sock/,
    );
  });
});

describe("registry credentials", () => {
  test("come from the Docker config file's auths, by registry", async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-docker-config-"));
    try {
      const file = join(dir, "config.json");
      const auth = (user: string, password: string) => Buffer.from(`${user}:${password}`).toString("base64");
      await writeFile(
        file,
        JSON.stringify({
          auths: {
            "registry.example:5000": { auth: auth("ci", "p:ss") },
            "https://index.docker.io/v1/": { auth: auth("hub-user", "hub-token") },
          },
        }),
      );
      assert.deepEqual(await registryAuth("registry.example:5000/team/app:1", file), {
        username: "ci",
        password: "p:ss",
        serveraddress: "registry.example:5000",
      });
      assert.deepEqual(await registryAuth("library/node:24", file), {
        username: "hub-user",
        password: "hub-token",
        serveraddress: "docker.io",
      });
      assert.equal(await registryAuth("other.example/app:1", file), undefined);
      assert.equal(await registryAuth("app:1", join(dir, "missing.json")), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
