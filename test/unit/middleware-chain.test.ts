/**
 * The one place errors become gRPC statuses and the middlewares around it
 * (src/middleware/chain.ts), in process: the chain is handed calls as nice-grpc hands them,
 * with handlers that answer or throw. A BerthError keeps its code and
 * message; anything else is INTERNAL without its text or stack; a cancelled
 * call stays cancelled; malformed requests, callers not on the allow-list,
 * probe floods and calls during shutdown are refused before the handler
 * runs; every call is counted and audited with its outcome.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ServerError } from "nice-grpc";
import { type CallContext, Metadata, type ServerMiddlewareCall } from "nice-grpc-common";
import type { AuditRecord } from "../../src/audit.js";
import { BerthError, Status } from "../../src/errors.js";
import { Metrics } from "../../src/metrics.js";
import type { RpcContextExt } from "../../src/protocol/common.js";
import { MalformedRequest } from "../../src/protocol/malformed.js";
import { CallerRateLimit } from "../../src/rate-limit.js";
import { middlewareChain } from "../../src/middleware/chain.js";
import { PluginCallTracker } from "../../src/middleware/drain.js";
import type { AuditLog } from "../../src/audit.js";
import { memoryLogger } from "./core-setup.js";
import { interceptedMetadata, peerCertificate } from "./intercepted-caller.js";

const execPath = "/plugin.v1alpha.BackendPlugin/Exec";
const removePath = "/plugin.v1.BackendPlugin/Remove";
const capabilitiesPath = "/plugin.v1alpha.BackendPlugin/Capabilities";
const healthPath = "/grpc.health.v1.Health/Check";

type Handler = (request: unknown, context: CallContext & RpcContextExt) => Promise<unknown>;

interface Boundary {
  /** Runs one unary call through the boundary to the handler; its answer, or the error it ended with. */
  call(
    path: string,
    handler: Handler,
    options?: { request?: unknown; metadata?: Metadata; signal?: AbortSignal },
  ): Promise<unknown>;
  /** Runs one client-streaming call: the handler reads the request messages. */
  stream(
    path: string,
    messages: unknown[],
    handler: (request: AsyncIterable<unknown>) => Promise<unknown>,
  ): Promise<unknown>;
  audit: AuditRecord[];
  metrics: Metrics;
  calls: PluginCallTracker;
  log: () => string;
}

/** A unary handler's answer as nice-grpc's next() gives it: a generator that yields nothing and returns it. */
async function* unaryAnswer(answer: Promise<unknown>): AsyncGenerator<never, unknown, undefined> {
  yield* [];
  return await answer;
}

function boundary(
  options: {
    allowedClients?: string[];
    probesPerSecond?: number;
    environments?: Record<string, string>;
  } = {},
): Boundary {
  const { logger, log } = memoryLogger();
  const metrics = new Metrics();
  const calls = new PluginCallTracker();
  const audit: AuditRecord[] = [];
  const frozenClock = () => 0;
  const middleware = middlewareChain({
    logger,
    calls,
    probes: new CallerRateLimit(options.probesPerSecond ?? 0, frozenClock),
    metrics,
    audit: (): AuditLog => ({ record: async (entry) => void audit.push(entry), close: async () => {} }),
    listener: () => ({
      address: "unix:///run/berth.sock",
      backend: "main",
      allowedClients: options.allowedClients,
    }),
    backendOf: (id: string) => options.environments?.[id],
  });
  const context = (metadata: Metadata, signal: AbortSignal): CallContext => ({
    metadata,
    peer: "unix:/run/berth.sock",
    header: Metadata(),
    sendHeader: () => {},
    trailer: Metadata(),
    signal,
  });
  const run = async (generator: AsyncGenerator<unknown, unknown>) => {
    try {
      for (;;) {
        const next = await generator.next();
        if (next.done) return next.value;
      }
    } catch (err) {
      return err;
    }
  };
  return {
    audit,
    metrics,
    calls,
    log,
    call(path, handler, { request = {}, metadata = Metadata(), signal = new AbortController().signal } = {}) {
      const call: ServerMiddlewareCall<unknown, unknown, RpcContextExt> = {
        method: { path, requestStream: false, responseStream: false, options: {} },
        requestStream: false,
        request,
        responseStream: false,
        next: (received, nextContext) => unaryAnswer(handler(received, nextContext)),
      };
      return run(middleware(call, context(metadata, signal)));
    },
    stream(path, messages, handler) {
      async function* requests() {
        yield* messages;
      }
      const call: ServerMiddlewareCall<unknown, unknown, RpcContextExt> = {
        method: { path, requestStream: true, responseStream: false, options: {} },
        requestStream: true,
        request: requests(),
        responseStream: false,
        next: (received) => unaryAnswer(handler(received as AsyncIterable<unknown>)),
      };
      return run(middleware(call, context(Metadata(), new AbortController().signal)));
    },
  };
}

/** The answer was this gRPC status, with exactly this message when one is given. */
function isStatus(answer: unknown, code: Status, details?: string | RegExp): void {
  assert.ok(answer instanceof ServerError, `expected a ServerError, got ${String(answer)}`);
  assert.equal(Status[answer.code], Status[code], answer.details);
  if (typeof details === "string") assert.equal(answer.details, details);
  else if (details) assert.match(answer.details, details);
}

const requests = (metrics: Metrics) =>
  metrics.text().then((text) => text.match(/^berth_rpc_requests_total\{.*$/gm) ?? []);

describe("errors become statuses", () => {
  test("a BerthError keeps its code and message, logged once at warn with the environment", async () => {
    const b = boundary({ environments: { "berth-00000000000000e1": "docker" } });
    const answer = await b.call(execPath, async (_request, context) => {
      context.noteEnvironment("berth-00000000000000e1");
      throw new BerthError(Status.FAILED_PRECONDITION, "start job container: container abc is not running");
    });
    isStatus(answer, Status.FAILED_PRECONDITION, "start job container: container abc is not running");
    const warnings = b
      .log()
      .split("\n")
      .filter((line) => line.includes('"level":40'));
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /"environmentId":"berth-00000000000000e1","code":"FAILED_PRECONDITION"/);
    assert.deepEqual(await requests(b.metrics), [
      'berth_rpc_requests_total{protocol="v1alpha",backend="docker",rpc="Exec",code="FAILED_PRECONDITION"} 1',
    ]);
  });

  for (const code of [
    Status.NOT_FOUND,
    Status.INVALID_ARGUMENT,
    Status.RESOURCE_EXHAUSTED,
    Status.DEADLINE_EXCEEDED,
  ]) {
    test(`a BerthError ${Status[code]} is answered as ${Status[code]}`, async () => {
      const answer = await boundary().call(removePath, () => Promise.reject(new BerthError(code, "why")));
      isStatus(answer, code, "why");
    });
  }

  test("any other exception is a bug: INTERNAL without its message or stack, logged at error with both", async () => {
    const b = boundary();
    const answer = await b.call(execPath, async () => {
      throw new TypeError("Cannot read properties of undefined (reading 'SECRET_TOKEN')");
    });
    isStatus(answer, Status.INTERNAL, `internal error in berth during ${execPath}; its log has the details`);
    const errorLine = b
      .log()
      .split("\n")
      .find((line) => line.includes('"level":50'));
    assert.ok(errorLine, "logged at error level");
    assert.match(errorLine, /unexpected error \(a bug in berth\)/);
    assert.match(errorLine, /SECRET_TOKEN/);
    assert.match(errorLine, /"stack":"TypeError: .*\\n {4}at /);
    assert.match((await requests(b.metrics)).join("\n"), /code="INTERNAL"\} 1/);
  });

  test("a ServerError from a handler passes through as it is", async () => {
    const answer = await boundary().call(removePath, () =>
      Promise.reject(new ServerError(Status.UNIMPLEMENTED, "no")),
    );
    isStatus(answer, Status.UNIMPLEMENTED, "no");
  });

  test("a cancelled call stays cancelled: the abort is passed on, counted CANCELLED, not logged as a bug", async () => {
    const b = boundary();
    const cancel = new AbortController();
    cancel.abort();
    const abort = new DOMException("The operation was aborted", "AbortError");
    const answer = await b.call(execPath, () => Promise.reject(abort), { signal: cancel.signal });
    assert.equal(answer, abort);
    const other = new Error("stream closed");
    assert.equal(await b.call(execPath, () => Promise.reject(other), { signal: cancel.signal }), other);
    assert.doesNotMatch(b.log(), /"level":50/);
    assert.match((await requests(b.metrics)).join("\n"), /rpc="Exec",code="CANCELLED"\} 2/);
    assert.deepEqual(
      b.audit.map((r) => [r.outcome, r.code]),
      [
        ["cancelled", "CANCELLED"],
        ["cancelled", "CANCELLED"],
      ],
    );
  });

  test("an answer is passed back, counted OK", async () => {
    const b = boundary();
    assert.deepEqual(await b.call(removePath, async () => ({ removed: true })), { removed: true });
    assert.deepEqual(await requests(b.metrics), [
      'berth_rpc_requests_total{protocol="v1",backend="main",rpc="Remove",code="OK"} 1',
    ]);
  });
});

describe("refused before the handler runs", () => {
  const mustNotRun: Handler = () => Promise.reject(new Error("the handler ran"));

  test("a request that did not decode is INVALID_ARGUMENT saying so", async () => {
    const answer = await boundary().call(execPath, mustNotRun, {
      request: new MalformedRequest("plugin.v1alpha.BackendPlugin/Exec", "invalid wire type 7 at offset 3"),
    });
    isStatus(
      answer,
      Status.INVALID_ARGUMENT,
      "the request to plugin.v1alpha.BackendPlugin/Exec is not a valid protobuf message of its type (invalid wire type 7 at offset 3); is the client built from this protocol's .proto?",
    );
  });

  test("in a request stream, the message that did not decode ends the call with INVALID_ARGUMENT", async () => {
    const read: unknown[] = [];
    const answer = await boundary().stream(
      "/plugin.v1.BackendPlugin/CopyIn",
      [
        { environmentId: "x" },
        new MalformedRequest("plugin.v1.BackendPlugin/CopyIn", "truncated"),
        { data: "never" },
      ],
      async (request) => {
        for await (const message of request) read.push(message);
        return {};
      },
    );
    isStatus(
      answer,
      Status.INVALID_ARGUMENT,
      /CopyIn is not a valid protobuf message of its type \(truncated\)/,
    );
    assert.deepEqual(read, [{ environmentId: "x" }], "the handler saw the messages before it only");
  });

  test("a caller not on tls.allowedClients is PERMISSION_DENIED naming it; one on it gets through", async () => {
    const b = boundary({ allowedClients: ["runner-1", "DNS:runner-2.ci"] });
    const tcp = { kind: "tcp", address: "tcp://0.0.0.0:7443" } as const;
    const as = (subject: Record<string, string>, sans?: string) =>
      interceptedMetadata(tcp, { peer: "10.0.0.9:4100", certificate: peerCertificate(subject, sans) });
    isStatus(
      await b.call(execPath, mustNotRun, { metadata: as({ O: "ci", CN: "intruder" }, "DNS:intruder.ci") }),
      Status.PERMISSION_DENIED,
      "client certificate O=ci,CN=intruder (DNS:intruder.ci) is not allowed on unix:///run/berth.sock (tls.allowedClients)",
    );
    isStatus(
      await b.call(healthPath, mustNotRun, { metadata: interceptedMetadata(tcp, { peer: "10.0.0.9:4101" }) }),
      Status.PERMISSION_DENIED,
      /^tcp peer 10\.0\.0\.9:4101 is not allowed/,
    );
    isStatus(
      await b.call(execPath, mustNotRun),
      Status.PERMISSION_DENIED,
      /^an unknown caller is not allowed/,
    );
    assert.equal(await b.call(execPath, async () => "ran", { metadata: as({ CN: "runner-1" }) }), "ran");
    assert.equal(
      await b.call(execPath, async () => "ran", { metadata: as({ CN: "x" }, "DNS:runner-2.ci") }),
      "ran",
    );
  });

  test("probes past a caller's rate are RESOURCE_EXHAUSTED; other calls are not limited", async () => {
    const b = boundary({ probesPerSecond: 1 });
    const ok = async () => "ok";
    assert.deepEqual(
      [await b.call(capabilitiesPath, ok), await b.call(healthPath, ok)],
      ["ok", "ok"],
      "a burst of twice the rate",
    );
    isStatus(
      await b.call(capabilitiesPath, mustNotRun),
      Status.RESOURCE_EXHAUSTED,
      "an unknown caller calls Capabilities more often than berth allows (probesPerSecond); slow down",
    );
    assert.equal(await b.call(execPath, ok), "ok");
    assert.equal(await b.call(removePath, ok), "ok");
  });

  test("while berth shuts down, plugin calls are UNAVAILABLE and health checks still answered", async () => {
    const b = boundary();
    b.calls.draining = true;
    isStatus(
      await b.call(execPath, mustNotRun),
      Status.UNAVAILABLE,
      "berth is shutting down and takes no new calls; retry against its next start",
    );
    assert.equal(await b.call(healthPath, async () => "NOT_SERVING"), "NOT_SERVING");
  });

  test("refusals are counted and audited like any error", async () => {
    const b = boundary({ allowedClients: ["runner-1"] });
    await b.call(removePath, mustNotRun);
    assert.deepEqual(await requests(b.metrics), [
      'berth_rpc_requests_total{protocol="v1",backend="main",rpc="Remove",code="PERMISSION_DENIED"} 1',
    ]);
    assert.deepEqual(
      b.audit.map((r) => [r.rpc, r.outcome, r.code]),
      [["Remove", "error", "PERMISSION_DENIED"]],
    );
  });
});

describe("the audit record and the call count", () => {
  test("one record per plugin call with the environment and an Exec's argv as a digest, none for health", async () => {
    const b = boundary({ environments: { "berth-00000000000000e2": "host" } });
    const command = ["sh", "-c", "echo $SECRET"];
    await b.call(
      execPath,
      async (_request, context) => {
        context.noteEnvironment("berth-00000000000000e2");
        return {};
      },
      { request: { environmentId: "berth-00000000000000e2", command } },
    );
    await b.call(healthPath, async () => ({}));
    assert.equal(b.audit.length, 1);
    const [record] = b.audit;
    assert.deepEqual(
      [
        record.listener,
        record.protocol,
        record.backend,
        record.rpc,
        record.environmentId,
        record.outcome,
        record.code,
      ],
      ["unix:///run/berth.sock", "v1alpha", "host", "Exec", "berth-00000000000000e2", "ok", "OK"],
    );
    assert.deepEqual(Object.keys(record.argv!), ["sha256", "length", "bytes"]);
    assert.equal(record.argv!.length, 3);
    assert.match(record.argv!.sha256, /^[0-9a-f]{64}$/);
    assert.doesNotMatch(JSON.stringify(record), /SECRET/);
  });

  test("the call tracker is idle only once the plugin calls in flight are over", async () => {
    const b = boundary();
    let finish!: () => void;
    const running = b.call(execPath, () => new Promise<void>((resolve) => (finish = resolve)));
    await new Promise((resolve) => setImmediate(resolve));
    let idle = false;
    const idleNow = b.calls.idle().then(() => (idle = true));
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(idle, false, "an Exec is in flight");
    finish();
    await running;
    await idleNow;
    assert.equal(idle, true);
  });
});
