import { z } from "zod";
import { booleanOption, killGraceOption, listOption } from "../kit/driver-options.js";

export const kubernetesOptionsSchema = z.object({
  /** Kubeconfig file. Unset: the pod's service account when berth runs in a cluster, else $KUBECONFIG or ~/.kube/config. */
  kubeconfig: z.string().min(1).optional(),
  /** Context of the kubeconfig to use; unset: its current context. */
  context: z.string().min(1).optional(),
  /** Namespace of job pods. Unset: the context's namespace, berth's own pod's namespace, or "default". */
  namespace: z.string().min(1).optional(),
  /** YAML file with a Pod or a PodSpec that every job pod starts from (node selectors, tolerations, resources, a container named "job" to refine the job container). */
  podTemplate: z.string().min(1).optional(),
  /** Upper bound on a job pod's life when the runner sets no environment_timeout (activeDeadlineSeconds). */
  activeDeadlineSeconds: z.coerce
    .number()
    .int()
    .min(60)
    .default(6 * 3600),
  /** How long Start waits for the pod's containers to run and be ready. */
  startTimeoutMs: z.coerce.number().int().min(1000).default(300_000),
  /** How long a cancelled command gets between SIGTERM and SIGKILL. */
  killGraceMs: killGraceOption,
  /** Interval of pings on exec connections, so idle proxies keep silent steps connected. */
  execKeepaliveMs: z.coerce.number().int().min(1000).default(30_000),
  /** Grace period for a job pod's containers when Remove deletes it. */
  removeGraceSeconds: z.coerce.number().int().min(0).max(3600).default(2),
  /**
   * Give job pods an ownerReference to berth's own pod (named by POD_NAME and
   * POD_NAMESPACE from the downward API), so Kubernetes deletes them with it.
   */
  ownerReferences: booleanOption.default(false),
  /** Namespaces jobs may choose with backend option namespace, besides the default one. */
  allowedNamespaces: listOption.default([]),
  /** Service accounts jobs may choose with backend option service_account. */
  allowedServiceAccounts: listOption.default([]),
  /** Whether jobs may ask for privileged containers (backend option privileged). */
  allowPrivileged: booleanOption.default(false),
});

export type KubernetesOptions = z.infer<typeof kubernetesOptionsSchema>;
