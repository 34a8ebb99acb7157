import { dockerDriverFactory } from "../plugins/docker/index.js";
import { hostDriverFactory } from "../plugins/host/index.js";
import { kubernetesDriverFactory } from "../plugins/kubernetes/index.js";
import type { DriverFactory } from "./driver.js";
import { invalidArgument } from "./errors.js";

/** A factory with its options type erased, so factories of different drivers fit in one list. */
type RegisteredFactory = DriverFactory<unknown>;

function register<Options>(factory: DriverFactory<Options>): RegisteredFactory {
  return { ...factory, create: (options, context) => factory.create(options as Options, context) };
}

/** Every built-in driver, listed here and nowhere else. */
const builtInDrivers: readonly RegisteredFactory[] = [
  register(hostDriverFactory),
  register(dockerDriverFactory),
  register(kubernetesDriverFactory),
];

export function driverNames(): string[] {
  return builtInDrivers.map((factory) => factory.name);
}

export function findDriverFactory(name: string): DriverFactory {
  const factory = builtInDrivers.find((candidate) => candidate.name === name);
  if (!factory) {
    throw invalidArgument(`unknown driver "${name}"; berth has: ${driverNames().join(", ")}`);
  }
  return factory;
}
