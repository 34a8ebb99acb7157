/**
 * The composition root's list of built-in drivers: the only place in the
 * core that names a driver. Each is imported when a backend first uses it.
 */
import type { DriverEntry } from "./drivers.js";

export const builtInDrivers: readonly DriverEntry[] = [
  { name: "host", load: async () => (await import("../plugins/host/index.js")).hostDriverFactory },
  { name: "docker", load: async () => (await import("../plugins/docker/index.js")).dockerDriverFactory },
  {
    name: "kubernetes",
    load: async () => (await import("../plugins/kubernetes/index.js")).kubernetesDriverFactory,
  },
];
