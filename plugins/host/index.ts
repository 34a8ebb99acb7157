import type { DriverFactory } from "../../src/driver.js";
import { HostDriver } from "./driver.js";
import { type HostOptions, hostOptionsSchema } from "./options.js";
import { type HostEnvironment, hostSavedState } from "./state.js";

export const hostDriverFactory = {
  name: "host",
  optionsSchema: hostOptionsSchema,
  savedState: hostSavedState,
  create: (options, context) => new HostDriver(options, context),
} satisfies DriverFactory<HostOptions, HostEnvironment>;
