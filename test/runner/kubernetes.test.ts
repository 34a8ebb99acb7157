import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { ensureTestImages, testImages } from "../support/docker-images.js";
import { kubeTestImage, kubernetesTestOptions } from "../support/kubernetes.js";
import { runnerSuite } from "./scenarios.js";

const kube = kubernetesTestOptions();
// Service and container images come from the same engine the cluster's kubelet uses.
if (!kube.skip) await ensureTestImages();
const run = promisify(execFile);

runnerSuite({
  driver: "kubernetes",
  serveArgs: kube.serveArgs,
  labelArg: kubeTestImage,
  containerImage: testImages.web,
  serviceImage: testImages.web,
  leftovers: async (id) => {
    const { stdout } = await run(kube.kubectl, [
      "--kubeconfig",
      kube.kubeconfig,
      "get",
      "pods",
      "-A",
      "-l",
      `berth.environment=${id}`,
      "-o",
      "name",
    ]);
    return stdout.split("\n").filter(Boolean);
  },
  skip: kube.skip,
});
