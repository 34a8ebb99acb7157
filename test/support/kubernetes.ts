/**
 * Where the Kubernetes tests find their cluster: the kubeconfig named by
 * BERTH_TEST_KUBECONFIG (scripts/test-kubernetes.sh starts the cluster of
 * ../shared/kube and sets it). Without it they are skipped, unless
 * BERTH_REQUIRE_KUBERNETES=1 (CI sets it), where they fail instead.
 *
 *   const kube = kubernetesTestOptions();
 *   describe("…", { skip: kube.skip }, () => { … kube.kubeconfig … });
 */
import { existsSync } from "node:fs";

export interface KubernetesTestOptions {
  skip: string | false;
  /** The cluster's admin kubeconfig; empty when skipped. */
  kubeconfig: string;
  /** A kubectl that matches the test cluster. */
  kubectl: string;
  /** `berth serve` arguments for a kubernetes backend on the test cluster. */
  serveArgs: string[];
}

/** The image ../shared/kube/build.sh imports into the local engine (Debian's static busybox). */
export const kubeTestImage = "berth-kube/busybox:local";

export function kubernetesTestOptions(env: NodeJS.ProcessEnv = process.env): KubernetesTestOptions {
  const kubeconfig = env.BERTH_TEST_KUBECONFIG ?? "";
  const cache = env.BERTH_KUBE_CACHE ?? "/var/cache/berth-kube";
  const bundled = `${cache}/1.20.2/bin/kubectl`;
  const kubectl = existsSync(bundled) ? bundled : "kubectl";
  let reason: string | undefined;
  if (!kubeconfig) reason = "BERTH_TEST_KUBECONFIG is not set (npm run test:kubernetes sets it)";
  else if (!existsSync(kubeconfig)) reason = `BERTH_TEST_KUBECONFIG=${kubeconfig} does not exist`;
  const serveArgs = ["--backend", "kubernetes", "--backend-opt", `kubeconfig=${kubeconfig}`];
  if (reason === undefined) return { skip: false, kubeconfig, kubectl, serveArgs };
  if (env.BERTH_REQUIRE_KUBERNETES === "1") {
    throw new Error(
      `BERTH_REQUIRE_KUBERNETES=1 but there is no test cluster: ${reason}. ` +
        "Run the Kubernetes tests with `npm run test:kubernetes`, which starts one.",
    );
  }
  return { skip: reason, kubeconfig: "", kubectl, serveArgs: [] };
}
