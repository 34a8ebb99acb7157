/**
 * A FAKE DRIVER, for testing the core's own logic in process (queues,
 * deadlines, removal, slots, option handling, workdirs). It runs nothing and
 * talks to no backend; every real driver is held to the protocol by the
 * conformance suite and the runner-sequence suite instead.
 *
 * Commands it understands (argv[0]):
 *   echo ARGS…          writes ARGS to stdout, exits 0
 *   exit N              exits N
 *   wait GATE           runs until gate GATE is opened; an abort ends it
 *                       `dyingMs` later (a command that takes a moment to die)
 *   pwd                 writes the workdir it was given
 */
import { Writable } from "node:stream";
import type {
  CreatedEnvironment,
  Driver,
  DriverCapabilities,
  EnvironmentRef,
  EnvironmentSpec,
  ExecResult,
  ExecSinks,
  ExecSpec,
  Layout,
  ManagedEnvironment,
  SavedState,
} from "../../src/driver.js";
import { failedPrecondition } from "../../src/errors.js";
import { z } from "zod";

export const fakeLayout: Layout = {
  rootPath: "/fake/root",
  actPath: "/fake/root/act",
  toolCachePath: "/fake/root/toolcache",
  tempPath: "/fake/root/tmp",
  pathVariableName: "PATH",
  defaultPathVariable: "/usr/bin:/bin",
  pathSeparator: ":",
  environmentCaseInsensitive: false,
  os: "Linux",
  arch: "X64",
};

/** The fake's saved state: `{ fake: <id> }`. */
export const fakeSavedState: SavedState<unknown> = { version: 1, schema: z.object({ fake: z.string() }) };

export class FakeDriver implements Driver {
  /** Specs of every Create, in order. */
  readonly created: { id: string; spec: EnvironmentSpec }[] = [];
  readonly removed: string[] = [];
  /** Workdirs Exec was given, in order. */
  readonly workdirs: string[] = [];
  /** How long a `wait` command takes to end after its Exec was aborted. */
  dyingMs = 100;
  /** Make the next Remove fail (a backend error). */
  failNextRemove = false;
  private readonly gates = new Map<string, () => void>();
  private readonly gateOpened = new Map<string, Promise<void>>();

  /** Lets every `wait GATE` command end. */
  open(gate: string): void {
    void this.gate(gate);
    this.gates.get(gate)!();
  }

  private gate(name: string): Promise<void> {
    let opened = this.gateOpened.get(name);
    if (!opened) {
      opened = new Promise((resolve) => this.gates.set(name, resolve));
      this.gateOpened.set(name, opened);
    }
    return opened;
  }

  async provision(): Promise<void> {}

  capabilities(): DriverCapabilities {
    return {
      supportsServiceContainers: false,
      managesOwnNetworking: false,
      supportsDockerActions: false,
      supportsLocalCopy: false,
      globalLayout: fakeLayout,
      backendOptions: ["known"],
    };
  }

  async create(id: string, spec: EnvironmentSpec): Promise<CreatedEnvironment> {
    this.created.push({ id, spec });
    return { state: { fake: id }, layout: fakeLayout };
  }

  async start(
    _env: EnvironmentRef,
    progress: (line: string) => void,
  ): Promise<{ imageEnv: Record<string, string> }> {
    progress("fake environment ready");
    return { imageEnv: { PATH: "/usr/bin:/bin" } };
  }

  async exec(
    _env: EnvironmentRef,
    spec: ExecSpec,
    sinks: ExecSinks,
    signal: AbortSignal,
  ): Promise<ExecResult> {
    this.workdirs.push(spec.workdir);
    const [program, ...args] = spec.command;
    if (program === "echo") return write(sinks.stdout, `${args.join(" ")}\n`, 0);
    if (program === "pwd") return write(sinks.stdout, `${spec.workdir}\n`, 0);
    if (program === "exit") return { kind: "exited", exitCode: Number(args[0]) };
    if (program === "wait") {
      const aborted = new Promise<void>((resolve) =>
        signal.addEventListener("abort", () => setTimeout(resolve, this.dyingMs), { once: true }),
      );
      await Promise.race([this.gate(args[0]), aborted]);
      signal.throwIfAborted();
      return { kind: "exited", exitCode: 0 };
    }
    return { kind: "failed", message: `fake driver: no command ${program}` };
  }

  async copyIn(): Promise<void> {}
  async copyOut(): Promise<never> {
    throw failedPrecondition("fake driver: no CopyOut");
  }
  async readFile(): Promise<undefined> {
    return undefined;
  }
  async health(): Promise<{ waitMs: number }> {
    return { waitMs: 0 };
  }

  async remove(env: EnvironmentRef): Promise<void> {
    if (this.failNextRemove) {
      this.failNextRemove = false;
      throw failedPrecondition("fake driver: the backend refused the removal");
    }
    this.removed.push(env.id);
  }

  async adopt(): Promise<boolean> {
    return true;
  }
  async listManaged(): Promise<ManagedEnvironment[]> {
    return [];
  }
  async cleanup(): Promise<void> {}
}

function write(sink: Writable, text: string, exitCode: number): Promise<ExecResult> {
  return new Promise((resolve) => sink.write(text, () => resolve({ kind: "exited", exitCode })));
}
