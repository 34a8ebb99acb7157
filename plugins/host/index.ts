import type { DriverFactory } from "../../src/driver.js";
import { HostDriver } from "./driver.js";
import { type HostOptions, hostOptionsSchema } from "./options.js";

export const hostDriverFactory = {
  name: "host",
  description: "a private directory per job on this machine, commands as plain processes (the test driver)",
  optionsSchema: hostOptionsSchema,
  create: (options, { logger }) => new HostDriver(options, logger),
} satisfies DriverFactory<HostOptions>;
