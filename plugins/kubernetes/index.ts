import type { DriverFactory } from "../../src/driver.js";
import { KubernetesDriver } from "./driver.js";
import { type KubernetesOptions, kubernetesOptionsSchema } from "./options.js";
import { type KubernetesEnvironment, kubernetesSavedState } from "./state.js";

export const kubernetesDriverFactory = {
  name: "kubernetes",
  optionsSchema: kubernetesOptionsSchema,
  savedState: kubernetesSavedState,
  create: (options, { logger, instance }) => new KubernetesDriver(options, logger, instance),
} satisfies DriverFactory<KubernetesOptions, KubernetesEnvironment>;
