import type { DriverFactory } from "../../src/driver.js";
import { DockerDriver } from "./driver.js";
import { type DockerOptions, dockerOptionsSchema } from "./options.js";

export const dockerDriverFactory = {
  name: "docker",
  description: "a container and a network per job on a Docker engine",
  optionsSchema: dockerOptionsSchema,
  create: (options, { logger, instance }) => new DockerDriver(options, logger, instance),
} satisfies DriverFactory<DockerOptions>;
