import type { Driver, DriverContext, DriverFactory, SavedState } from "./driver.js";
import { invalidArgument } from "./errors.js";

/**
 * A driver known by name whose code is loaded only when a backend uses it,
 * so a command that serves no backend (`--version`, `--help`, `run`) never
 * loads dockerode or the Kubernetes client.
 */
export interface DriverEntry {
  name: string;
  load(): Promise<DriverFactory>;
}

/** A loaded driver factory with its options type erased, so factories of different drivers fit in one list. */
export interface LoadedDriver {
  name: string;
  optionsSchema: DriverFactory["optionsSchema"];
  /** The format of the state its environments keep, with the type erased (the core checks records against it). */
  savedState: SavedState<unknown>;
  /** Builds the driver from options that optionsSchema parsed. */
  create(options: unknown, context: DriverContext): Driver;
}

/** The drivers a berth can use: the composition root hands one to the config loader and the daemon. */
export class DriverRegistry {
  private readonly loaded = new Map<string, Promise<LoadedDriver>>();

  constructor(private readonly entries: readonly DriverEntry[]) {}

  names(): string[] {
    return this.entries.map((entry) => entry.name);
  }

  has(name: string): boolean {
    return this.entries.some((entry) => entry.name === name);
  }

  /** The driver's factory, loading its code the first time; INVALID_ARGUMENT for an unknown name. */
  factory(name: string): Promise<LoadedDriver> {
    const entry = this.entries.find((candidate) => candidate.name === name);
    if (!entry) {
      return Promise.reject(
        invalidArgument(`unknown driver "${name}"; berth has: ${this.names().join(", ")}`),
      );
    }
    let loading = this.loaded.get(name);
    if (!loading) {
      loading = entry.load().then(erase);
      this.loaded.set(name, loading);
    }
    return loading;
  }
}

function erase<Options, State>(factory: DriverFactory<Options, State>): LoadedDriver {
  return {
    name: factory.name,
    optionsSchema: factory.optionsSchema,
    savedState: factory.savedState,
    create: (options, context) => factory.create(options as Options, context),
  };
}
