import type { DriverFactory } from "../../src/driver.js";
import { DockerDriver } from "./driver.js";
import { type DockerOptions, dockerOptionsSchema } from "./options.js";

export const dockerDriverFactory = {
  name: "docker",
  optionsSchema: dockerOptionsSchema,
  create: (options, { logger, instance }) => new DockerDriver(options, logger, instance),
} satisfies DriverFactory<DockerOptions>;
