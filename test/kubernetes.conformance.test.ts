import { conformanceSuite } from "./conformance.js";
import { kubeTestImage, kubernetesTestOptions } from "./support/kubernetes.js";

const kube = kubernetesTestOptions();

conformanceSuite({
  driver: "kubernetes",
  serveArgs: ["--backend", "kubernetes", "--backend-opt", `kubeconfig=${kube.kubeconfig}`],
  image: kubeTestImage,
  generations: ["v1", "v1alpha"],
  skip: kube.skip,
});
