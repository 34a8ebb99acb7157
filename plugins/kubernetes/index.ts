import type { DriverFactory } from "../../src/driver.js";
import { KubernetesDriver } from "./driver.js";
import { type KubernetesOptions, kubernetesOptionsSchema } from "./options.js";

export const kubernetesDriverFactory = {
  name: "kubernetes",
  description: "a pod per job on a Kubernetes cluster",
  optionsSchema: kubernetesOptionsSchema,
  create: (options, { logger }) => new KubernetesDriver(options, logger),
} satisfies DriverFactory<KubernetesOptions>;
