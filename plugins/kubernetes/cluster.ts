import {
  AuthorizationV1Api,
  type CoreV1Api,
  type KubeConfig,
  type V1OwnerReference,
  VersionApi,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import { BerthError, invalidArgument, messageOf, permissionDenied } from "../../src/errors.js";
import { runnerArch, runnerOs } from "../kit/runner-platform.js";
import { kubernetesError } from "./errors.js";
import type { KubernetesOptions } from "./options.js";

/** Berth's own pod, as the owner of the job pods in its namespace. */
export type JobPodOwner = V1OwnerReference & { namespace: string };

/**
 * Loads the kubeconfig into `kubeConfig`, once for the daemon's life; returns
 * where it came from and the namespace job pods go to unless a job picks one.
 */
export function loadKubeConfig(
  kubeConfig: KubeConfig,
  options: Pick<KubernetesOptions, "kubeconfig" | "context" | "namespace">,
): { source: string; namespace: string } {
  let source: string;
  try {
    if (options.kubeconfig) {
      kubeConfig.loadFromFile(options.kubeconfig);
      source = options.kubeconfig;
    } else if (process.env.KUBERNETES_SERVICE_HOST) {
      kubeConfig.loadFromCluster();
      source = "in-cluster service account";
    } else {
      kubeConfig.loadFromDefault();
      source = process.env.KUBECONFIG ?? "~/.kube/config";
    }
    if (options.context) kubeConfig.setCurrentContext(options.context);
  } catch (err) {
    throw invalidArgument(`driver kubernetes: provision: cannot load the kubeconfig: ${messageOf(err)}`);
  }
  if (!kubeConfig.getCurrentCluster()) {
    throw invalidArgument(
      "driver kubernetes: provision: no cluster configured: give --backend-opt kubeconfig=FILE, set KUBECONFIG, or run berth in a pod",
    );
  }
  const contextNamespace = kubeConfig.getContextObject(kubeConfig.getCurrentContext())?.namespace;
  const namespace = options.namespace ?? contextNamespace ?? process.env.POD_NAMESPACE ?? "default";
  return { source, namespace };
}

/**
 * The API server's version, and what it decides: whether services can be
 * native sidecars (1.29+), and the nodes' platform as the runner names it.
 */
export async function readServerVersion(
  kubeConfig: KubeConfig,
  server: string,
  source: string,
): Promise<{ gitVersion: string; nativeSidecars: boolean; platform: { os: string; arch: string } }> {
  const step = (what: string, err: unknown): BerthError => {
    const mapped = kubernetesError(err, what);
    return new BerthError(mapped.code, `driver kubernetes: provision: ${mapped.message}`, { cause: err });
  };
  const version = await kubeConfig
    .makeApiClient(VersionApi)
    .getCode()
    .catch((err: unknown) => {
      throw step(`cannot reach the Kubernetes API at ${server} (config: ${source})`, err);
    });
  const minor = Number.parseInt(version.minor, 10);
  const nativeSidecars = Number(version.major) > 1 || minor >= 29;
  const [os, arch] = (version.platform ?? "linux/amd64").split("/");
  return {
    gitVersion: version.gitVersion,
    nativeSidecars,
    platform: { os: runnerOs(os), arch: runnerArch(arch) },
  };
}

/** Fails provisioning with the missing verbs, instead of failing the first job. */
export async function checkPermissions(kubeConfig: KubeConfig, namespace: string): Promise<void> {
  const authorization = kubeConfig.makeApiClient(AuthorizationV1Api);
  const needed = [
    ...["create", "get", "list", "watch", "delete"].map((verb) => ({ verb, resource: "pods" })),
    { verb: "create", resource: "pods", subresource: "exec" },
    { verb: "get", resource: "pods", subresource: "exec" },
    ...["list", "watch"].map((verb) => ({ verb, resource: "events" })),
  ];
  const missing: string[] = [];
  for (const attributes of needed) {
    const review = await authorization
      .createSelfSubjectAccessReview({
        body: { spec: { resourceAttributes: { ...attributes, namespace } } },
      })
      .catch((err: unknown) => {
        throw kubernetesError(err, "driver kubernetes: provision: check permissions");
      });
    if (!review.status?.allowed) {
      missing.push(
        `${attributes.verb} ${attributes.resource}${"subresource" in attributes ? `/${attributes.subresource}` : ""}`,
      );
    }
  }
  if (missing.length > 0) {
    throw permissionDenied(
      `driver kubernetes: provision: berth's identity may not ${missing.join(", ")} in namespace ${namespace}; ` +
        "grant them with a Role such as deploy/kubernetes/role.yaml",
    );
  }
}

/** Berth's own pod, for ownerReferences on job pods (downward API: POD_NAME, POD_NAMESPACE). */
export async function findOwner(core: CoreV1Api, jobNamespace: string, logger: Logger): Promise<JobPodOwner> {
  const name = process.env.POD_NAME;
  const namespace = process.env.POD_NAMESPACE ?? jobNamespace;
  if (!name) {
    throw invalidArgument(
      "driver kubernetes: provision: ownerReferences=true needs POD_NAME (and POD_NAMESPACE) set from the downward API",
    );
  }
  const pod = await core.readNamespacedPod({ name, namespace }).catch((err: unknown) => {
    throw kubernetesError(err, `driver kubernetes: provision: read berth's own pod ${namespace}/${name}`);
  });
  const owner = { apiVersion: "v1", kind: "Pod", name, uid: pod.metadata?.uid ?? "", namespace };
  if (namespace !== jobNamespace) {
    logger.warn(
      { ownerNamespace: namespace, jobNamespace },
      "job pods are in another namespace than berth's pod: ownerReferences cannot cross namespaces and are left out",
    );
  }
  return owner;
}
