/**
 * One daemon with a host, a docker and a kubernetes backend, each on its own
 * socket, running jobs on all three at once; an environment id used on
 * another backend's socket still reaches its own backend. Needs the Docker
 * engine and the test cluster (npm run test:kubernetes).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { openChannel, v1alphaClient } from "../../src/client.js";
import { startDaemon } from "../support/daemon-process.js";
import { dockerTestOptions, ensureTestImages, testImages } from "../support/docker-images.js";
import { kubeTestImage, kubernetesTestOptions } from "../support/kubernetes.js";

const kube = kubernetesTestOptions();
const docker = kube.skip ? { skip: kube.skip } : await dockerTestOptions();
if (!kube.skip && !docker.skip) await ensureTestImages();

test(
  "host, docker and kubernetes backends in one daemon run jobs concurrently, ids find their own backend",
  { skip: kube.skip || docker.skip },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "berth-three-"));
    const config = join(dir, "berth.yaml");
    await writeFile(
      config,
      `listeners:
  - address: unix://${dir}/host.sock
    backend: host
  - address: unix://${dir}/docker.sock
    backend: docker
  - address: unix://${dir}/k8s.sock
    backend: k8s
backends:
  host:
    driver: host
    options:
      root: ${dir}/host
  docker:
    driver: docker
  k8s:
    driver: kubernetes
    options:
      kubeconfig: ${kube.kubeconfig}
`,
    );
    const daemon = await startDaemon(["--config", config], { listen: [] });
    const backends = [
      { name: "host", image: "" },
      { name: "docker", image: testImages.busybox },
      { name: "k8s", image: kubeTestImage },
    ];
    const channels = backends.map(({ name }) => openChannel(`unix://${dir}/${name}.sock`));
    const clients = channels.map((channel) => v1alphaClient(channel));
    try {
      // A job on each backend at the same time: create, start, a command that shows where it runs.
      const jobs = await Promise.all(
        backends.map(async ({ name, image }, index) => {
          const client = clients[index];
          assert.equal((await client.capabilities()).name, name);
          const { id } = await client.create({ image });
          await client.start(id);
          let out = "";
          const outcome = await client.exec(id, ["sh", "-c", "sleep 1; cat /proc/1/cmdline | tr '\\0' ' '"], {
            onOutput: (_s, d) => (out += d.toString()),
          });
          assert.equal(outcome.exitCode, 0, `${name}: ${out}`);
          return { name, id, pid1: out };
        }),
      );
      // Each ran where it should: PID 1 is the keep-alive of a container (docker, kubernetes) or bubblewrap's (host).
      assert.match(jobs[1].pid1, /tail -f \/dev\/null|docker-init/);
      assert.match(jobs[2].pid1, /trap 'exit 0' TERM INT; tail -f \/dev\/null/);
      assert.notEqual(jobs[0].pid1, jobs[1].pid1);
      // Every environment driven through every other backend's socket reaches its own backend.
      for (const [index, job] of jobs.entries()) {
        const other = clients[(index + 1) % clients.length];
        let out = "";
        await other.exec(job.id, ["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"], {
          onOutput: (_s, d) => (out += d.toString()),
        });
        assert.equal(out, job.pid1, `${job.name}'s environment answered through another socket`);
        await other.remove(job.id);
      }
    } finally {
      for (const channel of channels) channel.close();
      assert.equal(await daemon.stop(), 0);
      await rm(dir, { recursive: true, force: true });
    }
  },
);
