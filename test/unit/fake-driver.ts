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
 *   announce GATE       writes "GATE\n" to stdout, then runs as `wait GATE`
 *   pwd                 writes the workdir it was given
 *   crash MESSAGE       throws a plain Error (a bug in a driver, not a backend's answer)
 *   pattern N           writes patternBytes(N, 0) to stdout and patternBytes(N/4, 1)
 *                       to stderr, interleaved, in chunks of changing sizes; exits 0
 *
 * Create and Start named in `hangs` run until their call is aborted (a
 * backend that does not answer). CopyIn reads the (checked) tar to its end
 * and keeps its byte count. listManaged answers what a test puts in
 * `managed`, as a backend would list the resources it finds under berth's
 * labels. fakeDriverRegistry offers the fake to the config loader and the
 * daemon as a driver named "fake", with one option, dyingMs.
 */
import { once } from "node:events";
import type { Readable, Writable } from "node:stream";
import { z } from "zod";
import type {
  CreatedEnvironment,
  Driver,
  DriverCapabilities,
  DriverFactory,
  EnvironmentRef,
  EnvironmentSpec,
  ExecResult,
  ExecSinks,
  ExecSpec,
  Layout,
  ManagedEnvironment,
  SavedState,
} from "../../src/driver.js";
import { DriverRegistry } from "../../src/drivers.js";
import { failedPrecondition } from "../../src/errors.js";

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
  /** Create and Start named here never finish by themselves: they end when their signal aborts. */
  readonly hangs = new Set<"create" | "start">();
  /** While set, health and remove wait for it, as a backend that does not answer (they take no signal). */
  held?: Promise<void>;
  /** What listManaged finds; a test sets it. */
  managed: ManagedEnvironment[] = [];
  /** Make listManaged fail with this (a backend that cannot be listed). */
  listError?: Error;
  /** Bytes of each CopyIn's tar, in order, once it was read to its end. */
  readonly copiedIn: { dest: string; bytes: number }[] = [];
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

  async create(id: string, spec: EnvironmentSpec, signal: AbortSignal): Promise<CreatedEnvironment> {
    this.created.push({ id, spec });
    if (this.hangs.has("create")) await untilAborted(signal);
    return { state: { fake: id }, layout: fakeLayout };
  }

  async start(
    _env: EnvironmentRef,
    progress: (line: string) => void,
    signal: AbortSignal,
  ): Promise<{ imageEnv: Record<string, string> }> {
    if (this.hangs.has("start")) {
      progress("fake environment booting");
      await untilAborted(signal);
    }
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
    if (program === "crash") throw new Error(args.join(" "));
    if (program === "pattern") return writePattern(sinks, Number(args[0]));
    if (program === "announce") await write(sinks.stdout, `${args[0]}\n`, 0);
    if (program === "wait" || program === "announce") {
      const aborted = new Promise<void>((resolve) =>
        signal.addEventListener("abort", () => setTimeout(resolve, this.dyingMs), { once: true }),
      );
      await Promise.race([this.gate(args[0]), aborted]);
      signal.throwIfAborted();
      return { kind: "exited", exitCode: 0 };
    }
    return { kind: "failed", message: `fake driver: no command ${program}` };
  }

  async copyIn(_env: EnvironmentRef, dest: string, tar: Readable): Promise<void> {
    let bytes = 0;
    for await (const chunk of tar as AsyncIterable<Buffer>) bytes += chunk.length;
    this.copiedIn.push({ dest, bytes });
  }
  async copyOut(): Promise<never> {
    throw failedPrecondition("fake driver: no CopyOut");
  }
  async readFile(): Promise<undefined> {
    return undefined;
  }
  async health(): Promise<{ waitMs: number }> {
    await this.held;
    return { waitMs: 0 };
  }

  async remove(env: EnvironmentRef): Promise<void> {
    await this.held;
    if (this.failNextRemove) {
      this.failNextRemove = false;
      throw failedPrecondition("fake driver: the backend refused the removal");
    }
    this.removed.push(env.id);
  }

  async adopt(_env: EnvironmentRef): Promise<boolean> {
    return true;
  }
  async listManaged(): Promise<ManagedEnvironment[]> {
    if (this.listError) throw this.listError;
    return this.managed;
  }
  async cleanup(): Promise<void> {}
}

const fakeOptions = z.object({ dyingMs: z.coerce.number().int().min(0).default(100) });

/** A registry whose only driver is the fake, named "fake"; every driver it makes is handed to `made`. */
export function fakeDriverRegistry(made: (driver: FakeDriver) => void = () => {}): DriverRegistry {
  const factory: DriverFactory<z.infer<typeof fakeOptions>> = {
    name: "fake",
    optionsSchema: fakeOptions,
    savedState: fakeSavedState,
    create(options) {
      const driver = new FakeDriver();
      driver.dyingMs = options.dyingMs;
      made(driver);
      return driver;
    },
  };
  return new DriverRegistry([{ name: "fake", load: async () => factory }]);
}

/** Waits for the signal's abort, then throws its reason. */
async function untilAborted(signal: AbortSignal): Promise<never> {
  if (!signal.aborted)
    await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
  throw signal.reason;
}

/**
 * The bytes `pattern N` prints: N bytes on stdout and N/4 on stderr, in
 * chunks of changing sizes (1 byte to 300 KiB, across the 256 KiB message
 * limit), each byte depending on its offset, so a chunk delivered twice,
 * cut or overwritten by the next one shows.
 */
export function patternBytes(length: number, salt: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + (i >> 8) + salt) & 0xff;
  return bytes;
}

const patternChunkSizes = [1, 4_000, 65_536, 300_000, 127, 262_144, 70_001];

async function writePattern(sinks: ExecSinks, length: number): Promise<ExecResult> {
  const streams = [
    { sink: sinks.stdout, bytes: patternBytes(length, 0) },
    { sink: sinks.stderr, bytes: patternBytes(Math.floor(length / 4), 1) },
  ];
  for (let offset = 0, turn = 0; streams.some((s) => offset < s.bytes.length); turn++) {
    const size = patternChunkSizes[turn % patternChunkSizes.length];
    for (const { sink, bytes } of streams) {
      if (offset >= bytes.length) continue;
      const chunk = bytes.subarray(offset, offset + size);
      if (!sink.write(chunk)) await once(sink, "drain");
    }
    offset += size;
  }
  return { kind: "exited", exitCode: 0 };
}

function write(sink: Writable, text: string, exitCode: number): Promise<ExecResult> {
  return new Promise((resolve) => sink.write(text, () => resolve({ kind: "exited", exitCode })));
}
