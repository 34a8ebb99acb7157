import { dockerDriverFactory } from "../plugins/docker/index.js";
import { hostDriverFactory } from "../plugins/host/index.js";
import { kubernetesDriverFactory } from "../plugins/kubernetes/index.js";
import type { Driver, DriverContext, DriverFactory } from "./driver.js";
import { parseDriverOptions } from "./driver-options.js";
import { invalidArgument } from "./errors.js";

/** A driver factory with its options type erased, so factories of different drivers fit in one list. */
export interface RegisteredDriver extends Omit<DriverFactory, "create"> {
  /** Validates raw options; throws a BerthError(INVALID_ARGUMENT) naming the driver and the bad key. */
  parseOptions(raw: Record<string, unknown>): unknown;
  /** Builds the driver from options that parseOptions returned. */
  create(options: unknown, context: DriverContext): Driver;
}

function register<Options>(factory: DriverFactory<Options>): RegisteredDriver {
  return {
    ...factory,
    parseOptions: (raw) => parseDriverOptions(factory.name, factory.optionsSchema, raw),
    create: (options, context) => factory.create(options as Options, context),
  };
}

/** Every built-in driver, listed here and nowhere else. */
const builtInDrivers: readonly RegisteredDriver[] = [
  register(hostDriverFactory),
  register(dockerDriverFactory),
  register(kubernetesDriverFactory),
];

export function driverNames(): string[] {
  return builtInDrivers.map((factory) => factory.name);
}

export function findDriverFactory(name: string): RegisteredDriver {
  const factory = builtInDrivers.find((candidate) => candidate.name === name);
  if (!factory) {
    throw invalidArgument(`unknown driver "${name}"; berth has: ${driverNames().join(", ")}`);
  }
  return factory;
}
