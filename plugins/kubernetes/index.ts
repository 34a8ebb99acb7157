import type { DriverFactory } from "../../src/driver.js";
import { KubernetesDriver } from "./driver.js";
import { type KubernetesOptions, kubernetesOptionsSchema } from "./options.js";

export const kubernetesDriverFactory = {
  name: "kubernetes",
  description: "a pod per job on a Kubernetes cluster",
  optionsSchema: kubernetesOptionsSchema,
  create: (options, { logger, instance }) => new KubernetesDriver(options, logger, instance),
} satisfies DriverFactory<KubernetesOptions>;
