import { conformanceSuite } from "../conformance.js";
import { kubeTestImage, kubernetesTestOptions } from "../support/kubernetes.js";

const kube = kubernetesTestOptions();

conformanceSuite({
  driver: "kubernetes",
  serveArgs: kube.serveArgs,
  image: kubeTestImage,
  generations: ["v1", "v1alpha"],
  skip: kube.skip,
});
