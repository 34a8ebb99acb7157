/**
 * One EnvironmentService in process over the labelled fake driver
 * (fake-driver.ts), with a logger whose lines a test can read, and the
 * helpers the in-process core tests share. No backend is involved.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import type { EnvironmentSpec, ExecResult } from "../../src/driver.js";
import { type Backend, EnvironmentService, type ExecEvent } from "../../src/environments.js";
import { BerthError, Status } from "../../src/errors.js";
import { Metrics } from "../../src/metrics.js";
import { environmentSpec } from "../../src/protocol/common.js";
import type { EnvironmentRecord } from "../../src/state-store.js";
import { FakeDriver, fakeSavedState } from "./fake-driver.js";

export interface Core {
  service: EnvironmentService;
  driver: FakeDriver;
  backend: Backend;
  metrics: Metrics;
  logger: Logger;
  /** Everything logged so far, as JSON lines. */
  log: () => string;
}

/** A logger writing JSON lines into a string. */
export function memoryLogger(): { logger: Logger; log: () => string } {
  let text = "";
  const logger = pino(
    { level: "debug" },
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        text += chunk.toString();
        callback();
      },
    }),
  );
  return { logger, log: () => text };
}

export function core(
  limits: Partial<Backend["limits"]> = {},
  persist?: (records: EnvironmentRecord[]) => Promise<void>,
): Core {
  const { logger, log } = memoryLogger();
  const metrics = new Metrics();
  const driver = new FakeDriver();
  const backend: Backend = {
    name: "fake",
    driver,
    limits: { createWaitMs: 300_000, rpcTimeoutMs: {}, ...limits },
    savedState: fakeSavedState,
    strictBackendOptions: false,
  };
  return { service: new EnvironmentService(logger, metrics, persist), driver, backend, metrics, logger, log };
}

export const never = new AbortController().signal;

export async function create(c: Core, fields: Partial<EnvironmentSpec> = {}): Promise<string> {
  return (await c.service.create(c.backend, environmentSpec(fields), never)).id;
}

/** Runs an Exec to its end: its stdout and result. */
export async function exec(
  c: Core,
  id: string,
  command: string[],
  signal: AbortSignal = never,
): Promise<{ stdout: string; result?: ExecResult }> {
  let stdout = "";
  let result: ExecResult | undefined;
  const spec = { command, env: {}, user: "", workdir: "" };
  for await (const event of c.service.exec(id, spec, signal) as AsyncIterable<ExecEvent>) {
    if (event.type === "output") stdout += event.data.toString();
    else result = event.result;
  }
  return { stdout, result };
}

/** How a call ended: "finished", or the gRPC code name of the BerthError it failed with. */
export function outcome(call: Promise<unknown>): Promise<string> {
  return call.then(
    () => "finished",
    (err: unknown) => (err instanceof BerthError ? Status[err.code] : `not a BerthError: ${String(err)}`),
  );
}

/** For assert.rejects: a BerthError with this code (and a message matching the pattern). */
export const code = (expected: Status, pattern?: RegExp) => (err: unknown) => {
  assert.ok(err instanceof BerthError, `expected a BerthError, got ${String(err)}`);
  assert.equal(Status[err.code], Status[expected], err.message);
  if (pattern) assert.match(err.message, pattern);
  return true;
};

/** Waits (at most a second) for a condition that something else makes true. */
export async function until(check: () => boolean, what = "the condition came true"): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(check(), what);
}
