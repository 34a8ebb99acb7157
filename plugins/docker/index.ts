import type { DriverFactory } from "../../src/driver.js";
import { DockerDriver } from "./driver.js";
import { type DockerOptions, dockerOptionsSchema } from "./options.js";
import { type DockerEnvironment, dockerSavedState } from "./state.js";

export const dockerDriverFactory = {
  name: "docker",
  optionsSchema: dockerOptionsSchema,
  savedState: dockerSavedState,
  create: (options, { logger, instance }) => new DockerDriver(options, logger, instance),
} satisfies DriverFactory<DockerOptions, DockerEnvironment>;
