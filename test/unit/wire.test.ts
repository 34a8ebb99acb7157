/**
 * Pins the wire contract of both protocol generations: field numbers, wire
 * types, oneof cases, enum values, map entry layout and the gRPC method
 * table, exactly as /work/shared/PROTOCOL.md states them.
 *
 * The expected tables below are written by hand from PROTOCOL.md, never from
 * the .proto files. Every message is built with every field set, encoded by
 * the generated (ts-proto) codec and read back with protobufjs's Reader, an
 * independent decoder. A .proto change that would break a runner (a renumbered
 * field, a changed type, a new field in a runner-facing message, a changed
 * streaming shape) fails here.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import protobuf from "protobufjs";
import * as v1 from "../../src/gen/plugin/v1/plugin.js";
import * as v1alpha from "../../src/gen/plugin/v1alpha/plugin.js";

// ---------------------------------------------------------------------------
// Wire types (https://protobuf.dev/programming-guides/encoding/)

/** bool, int32, uint32, enum */
const VARINT = 0;
/** string, bytes, messages, maps, repeated strings */
const LEN = 2;

/** Expected layout of one message: field number → wire type. */
type Fields = Readonly<Record<number, typeof VARINT | typeof LEN>>;

// ---------------------------------------------------------------------------
// Expected tables, from PROTOCOL.md

const V1_FIELDS = {
  CapabilitiesRequest: {},
  CapabilitiesResponse: {
    1: LEN, // name
    2: LEN, // root_path
    3: LEN, // act_path
    4: LEN, // tool_cache_path
    5: LEN, // path_variable_name
    6: LEN, // default_path_variable
    7: LEN, // path_separator
    8: VARINT, // supports_docker_actions
    9: VARINT, // manages_own_networking
    10: VARINT, // supports_service_containers
    11: VARINT, // environment_case_insensitive
    12: LEN, // runner_context (map)
    13: VARINT, // supports_local_copy
    14: VARINT, // delegates_to_docker
    15: VARINT, // protocol_version (uint32)
  },
  ServiceContainer: { 1: LEN, 2: LEN, 3: LEN, 4: LEN }, // name, image, env (map), ports
  CreateRequest: {
    1: LEN, // image
    2: LEN, // name
    3: LEN, // env (repeated string, or map<string,string> from newer runners; declared bytes)
    4: LEN, // working_dir
    5: LEN, // cap_add
    6: LEN, // cap_drop
    7: LEN, // services (repeated ServiceContainer)
    8: LEN, // backend_options (map)
    9: VARINT, // force_pull
    10: LEN, // platform
  },
  CreateResponse: { 1: LEN, 2: LEN }, // environment_id, delegate
  DockerDelegate: { 1: LEN, 2: LEN, 3: LEN, 4: LEN, 5: VARINT }, // endpoint, tls_ca/cert/key, tls_insecure_skip_verify
  StartRequest: { 1: LEN }, // environment_id
  StartResponse: { 1: LEN }, // image_env (map)
  ExecRequest: { 1: LEN, 2: LEN, 3: LEN, 4: LEN, 5: LEN }, // environment_id, command, env (map), user, workdir
  ExecOutput: { 1: VARINT, 2: LEN, 3: VARINT, 4: VARINT, 5: LEN }, // stream, data, exit_code, done, error_message
  CopyInChunk: { 1: LEN, 2: LEN, 3: LEN }, // environment_id, dest_path, data
  CopyInResponse: {},
  CopyLocalRequest: { 1: LEN, 2: LEN, 3: LEN }, // environment_id, src_path, dest_path
  CopyLocalResponse: {},
  CopyOutRequest: { 1: LEN, 2: LEN }, // environment_id, src_path
  CopyOutChunk: { 1: LEN }, // data
  UpdateEnvRequest: { 1: LEN, 2: LEN, 3: LEN }, // environment_id, src_path, current_env (map)
  UpdateEnvResponse: { 1: LEN }, // updated_env (map)
  IsHealthyRequest: { 1: LEN }, // environment_id
  IsHealthyResponse: { 1: LEN }, // wait (Duration)
  RemoveRequest: { 1: LEN }, // environment_id
  RemoveResponse: {},
} as const satisfies Record<string, Fields>;

const V1ALPHA_FIELDS = {
  CapabilitiesResponse: { 1: LEN }, // name; 2–7 reserved
  ServiceContainer: { 1: LEN, 2: LEN, 3: LEN, 4: LEN }, // name, image, env (map), ports
  CreateRequest: {
    1: LEN, // image
    2: LEN, // name
    // 3 and 4 reserved
    5: LEN, // cap_add
    6: LEN, // cap_drop
    7: LEN, // services
    8: LEN, // backend_options (map)
    9: LEN, // label_arg
    10: LEN, // environment_timeout (Duration)
  },
  CreateResponse: {
    1: LEN, // environment_id
    2: LEN, // root_path
    3: LEN, // act_path
    4: LEN, // tool_cache_path
    5: LEN, // temp_path
    6: LEN, // path_variable_name (optional)
    7: LEN, // default_path_variable (optional)
    8: LEN, // path_separator (optional)
    9: VARINT, // environment_case_insensitive
    10: LEN, // os
    11: LEN, // arch
  },
  StartRequest: { 1: LEN }, // environment_id
  StartOutput: { 1: LEN, 2: LEN }, // oneof: data, start_complete
  StartComplete: { 1: LEN }, // image_env (map)
  ExecRequest: { 1: LEN, 2: LEN, 3: LEN, 4: LEN, 5: LEN }, // environment_id, command, env (map), user, workdir
  ExecOutput: { 1: LEN, 2: LEN, 3: LEN }, // oneof: data, exec_complete, exec_failed
  DataChunk: { 1: VARINT, 2: LEN }, // stream, data
  ExecComplete: { 1: VARINT }, // exit_code
  ExecFailed: { 1: LEN }, // error_message
  CopyInChunk: { 1: LEN, 2: LEN, 3: LEN }, // environment_id, dest_path, data
  CopyInResponse: {},
  CopyOutRequest: { 1: LEN, 2: LEN }, // environment_id, src_path
  CopyOutChunk: { 1: LEN }, // data
  RemoveRequest: { 1: LEN }, // environment_id
  RemoveResponse: {},
} as const satisfies Record<string, Fields>;

/** Oneof members of v1alpha: case → field number (each case is a message, so LEN). */
const V1ALPHA_ONEOFS = {
  StartOutput: { data: 1, startComplete: 2 },
  ExecOutput: { data: 1, execComplete: 2, execFailed: 3 },
} as const;

/** map<string,string> fields: message → field number. */
const V1_MAPS = {
  CapabilitiesResponse: 12,
  ServiceContainer: 3,
  CreateRequest: 8,
  StartResponse: 1,
  ExecRequest: 3,
  UpdateEnvRequest: 3,
  UpdateEnvResponse: 1,
} as const satisfies Partial<Record<keyof typeof V1_FIELDS, number>>;

const V1ALPHA_MAPS = {
  ServiceContainer: 3,
  CreateRequest: 8,
  StartComplete: 1,
  ExecRequest: 3,
} as const satisfies Partial<Record<keyof typeof V1ALPHA_FIELDS, number>>;

/** int32 fields (exit codes): message → field number. int32 is a plain varint, not zigzag (sint32). */
const V1_INT32 = { ExecOutput: 3 } as const satisfies Partial<Record<keyof typeof V1_FIELDS, number>>;
const V1ALPHA_INT32 = { ExecComplete: 1 } as const satisfies Partial<
  Record<keyof typeof V1ALPHA_FIELDS, number>
>;

/** enum Stream { STDOUT = 0; STDERR = 1; } at field 1 of these messages. */
const STREAM_ENUM = { STDOUT: 0, STDERR: 1 } as const;

/** RPCs, written as PROTOCOL.md writes them. */
const V1_RPCS = {
  fullName: "plugin.v1.BackendPlugin",
  methods: {
    Capabilities: "CapabilitiesRequest → CapabilitiesResponse",
    Create: "CreateRequest → CreateResponse",
    Start: "StartRequest → StartResponse",
    Exec: "ExecRequest → stream ExecOutput",
    CopyIn: "stream CopyInChunk → CopyInResponse",
    CopyLocal: "CopyLocalRequest → CopyLocalResponse",
    CopyOut: "CopyOutRequest → stream CopyOutChunk",
    UpdateEnv: "UpdateEnvRequest → UpdateEnvResponse",
    IsHealthy: "IsHealthyRequest → IsHealthyResponse",
    Remove: "RemoveRequest → RemoveResponse",
  },
};

const V1ALPHA_RPCS = {
  fullName: "plugin.v1alpha.BackendPlugin",
  methods: {
    Capabilities: "CapabilitiesRequest → CapabilitiesResponse",
    Create: "CreateRequest → CreateResponse",
    Start: "StartRequest → stream StartOutput",
    Exec: "ExecRequest → stream ExecOutput",
    CopyIn: "stream CopyInChunk → CopyInResponse",
    CopyOut: "CopyOutRequest → stream CopyOutChunk",
    Remove: "RemoveRequest → RemoveResponse",
  },
};

// ---------------------------------------------------------------------------
// Samples: every field set to a non-default value

const MAP_KEY = "MAP_KEY";
const MAP_VALUE = "map value";
const MAP = { [MAP_KEY]: MAP_VALUE };
const BYTES = Buffer.from("bytes");
const DURATION = { seconds: 30, nanos: 5 };
/** Negative, so int32 and sint32 differ on the wire. */
const EXIT_CODE = -1;

/**
 * Encodes `message` with the generated codec. `Required<T>` makes the
 * compiler insist that every field of the generated type is set.
 */
function wire<T>(codec: v1.MessageFns<T>, message: Required<T>): Uint8Array {
  return codec.encode(codec.fromPartial(message as v1.DeepPartial<T>)).finish();
}

const v1Service: Required<v1.ServiceContainer> = {
  name: "db",
  image: "postgres:16",
  env: MAP,
  ports: ["5432", "8080:80", "53/udp"],
};

const V1_SAMPLES: { [K in keyof typeof V1_FIELDS]: Uint8Array[] } = {
  CapabilitiesRequest: [wire(v1.CapabilitiesRequest, {})],
  CapabilitiesResponse: [
    wire(v1.CapabilitiesResponse, {
      name: "berth",
      rootPath: "/root",
      actPath: "/root/act",
      toolCachePath: "/root/toolcache",
      pathVariableName: "PATH",
      defaultPathVariable: "/usr/bin",
      pathSeparator: ":",
      supportsDockerActions: true,
      managesOwnNetworking: true,
      supportsServiceContainers: true,
      environmentCaseInsensitive: true,
      runnerContext: MAP,
      supportsLocalCopy: true,
      delegatesToDocker: true,
      protocolVersion: 7,
    }),
  ],
  ServiceContainer: [wire(v1.ServiceContainer, v1Service)],
  CreateRequest: [
    wire(v1.CreateRequest, {
      image: "alpine",
      name: "job",
      env: [Buffer.from("A=1"), Buffer.from("B=2")],
      workingDir: "/w",
      capAdd: ["NET_ADMIN"],
      capDrop: ["ALL"],
      services: [v1Service],
      backendOptions: MAP,
      forcePull: true,
      platform: "linux/amd64",
    }),
  ],
  CreateResponse: [
    wire(v1.CreateResponse, {
      environmentId: "env",
      delegate: {
        endpoint: "tcp://d:2376",
        tlsCa: BYTES,
        tlsCert: BYTES,
        tlsKey: BYTES,
        tlsInsecureSkipVerify: true,
      },
    }),
  ],
  DockerDelegate: [
    wire(v1.DockerDelegate, {
      endpoint: "tcp://d:2376",
      tlsCa: BYTES,
      tlsCert: BYTES,
      tlsKey: BYTES,
      tlsInsecureSkipVerify: true,
    }),
  ],
  StartRequest: [wire(v1.StartRequest, { environmentId: "env" })],
  StartResponse: [wire(v1.StartResponse, { imageEnv: MAP })],
  ExecRequest: [
    wire(v1.ExecRequest, {
      environmentId: "env",
      command: ["sh", "-c", "true"],
      env: MAP,
      user: "root",
      workdir: "/w",
    }),
  ],
  ExecOutput: [
    wire(v1.ExecOutput, {
      stream: v1.ExecOutput_Stream.STDERR,
      data: BYTES,
      exitCode: EXIT_CODE,
      done: true,
      errorMessage: "boom",
    }),
  ],
  CopyInChunk: [wire(v1.CopyInChunk, { environmentId: "env", destPath: "/d", data: BYTES })],
  CopyInResponse: [wire(v1.CopyInResponse, {})],
  CopyLocalRequest: [wire(v1.CopyLocalRequest, { environmentId: "env", srcPath: "/s", destPath: "/d" })],
  CopyLocalResponse: [wire(v1.CopyLocalResponse, {})],
  CopyOutRequest: [wire(v1.CopyOutRequest, { environmentId: "env", srcPath: "/s" })],
  CopyOutChunk: [wire(v1.CopyOutChunk, { data: BYTES })],
  UpdateEnvRequest: [wire(v1.UpdateEnvRequest, { environmentId: "env", srcPath: "/s", currentEnv: MAP })],
  UpdateEnvResponse: [wire(v1.UpdateEnvResponse, { updatedEnv: MAP })],
  IsHealthyRequest: [wire(v1.IsHealthyRequest, { environmentId: "env" })],
  IsHealthyResponse: [wire(v1.IsHealthyResponse, { wait: DURATION })],
  RemoveRequest: [wire(v1.RemoveRequest, { environmentId: "env" })],
  RemoveResponse: [wire(v1.RemoveResponse, {})],
};

const v1alphaService: Required<v1alpha.ServiceContainer> = {
  name: "db",
  image: "postgres:16",
  env: MAP,
  ports: ["5432", "8080:80", "53/udp"],
};
const dataChunk: Required<v1alpha.DataChunk> = { stream: v1alpha.DataChunk_Stream.STDERR, data: BYTES };

/** One encoding per oneof case, keyed as V1ALPHA_ONEOFS. */
const V1ALPHA_ONEOF_SAMPLES: {
  [M in keyof typeof V1ALPHA_ONEOFS]: Record<keyof (typeof V1ALPHA_ONEOFS)[M], Uint8Array>;
} = {
  StartOutput: {
    data: wire(v1alpha.StartOutput, { output: { $case: "data", value: dataChunk } }),
    startComplete: wire(v1alpha.StartOutput, {
      output: { $case: "startComplete", value: { imageEnv: MAP } },
    }),
  },
  ExecOutput: {
    data: wire(v1alpha.ExecOutput, { output: { $case: "data", value: dataChunk } }),
    execComplete: wire(v1alpha.ExecOutput, {
      output: { $case: "execComplete", value: { exitCode: EXIT_CODE } },
    }),
    execFailed: wire(v1alpha.ExecOutput, {
      output: { $case: "execFailed", value: { errorMessage: "no such file" } },
    }),
  },
};

const V1ALPHA_SAMPLES: { [K in keyof typeof V1ALPHA_FIELDS]: Uint8Array[] } = {
  CapabilitiesResponse: [wire(v1alpha.CapabilitiesResponse, { name: "berth" })],
  ServiceContainer: [wire(v1alpha.ServiceContainer, v1alphaService)],
  CreateRequest: [
    wire(v1alpha.CreateRequest, {
      image: "alpine",
      name: "job",
      capAdd: ["NET_ADMIN"],
      capDrop: ["ALL"],
      services: [v1alphaService],
      backendOptions: MAP,
      labelArg: "alpine:3",
      environmentTimeout: DURATION,
    }),
  ],
  CreateResponse: [
    wire(v1alpha.CreateResponse, {
      environmentId: "env",
      rootPath: "/root",
      actPath: "/root/act",
      toolCachePath: "/root/toolcache",
      tempPath: "/root/tmp",
      pathVariableName: "PATH",
      defaultPathVariable: "/usr/bin",
      pathSeparator: ":",
      environmentCaseInsensitive: true,
      os: "Linux",
      arch: "X64",
    }),
  ],
  StartRequest: [wire(v1alpha.StartRequest, { environmentId: "env" })],
  StartOutput: Object.values(V1ALPHA_ONEOF_SAMPLES.StartOutput),
  StartComplete: [wire(v1alpha.StartComplete, { imageEnv: MAP })],
  ExecRequest: [
    wire(v1alpha.ExecRequest, {
      environmentId: "env",
      command: ["sh", "-c", "true"],
      env: MAP,
      user: "root",
      workdir: "/w",
    }),
  ],
  ExecOutput: Object.values(V1ALPHA_ONEOF_SAMPLES.ExecOutput),
  DataChunk: [wire(v1alpha.DataChunk, dataChunk)],
  ExecComplete: [wire(v1alpha.ExecComplete, { exitCode: EXIT_CODE })],
  ExecFailed: [wire(v1alpha.ExecFailed, { errorMessage: "no such file" })],
  CopyInChunk: [wire(v1alpha.CopyInChunk, { environmentId: "env", destPath: "/d", data: BYTES })],
  CopyInResponse: [wire(v1alpha.CopyInResponse, {})],
  CopyOutRequest: [wire(v1alpha.CopyOutRequest, { environmentId: "env", srcPath: "/s" })],
  CopyOutChunk: [wire(v1alpha.CopyOutChunk, { data: BYTES })],
  RemoveRequest: [wire(v1alpha.RemoveRequest, { environmentId: "env" })],
  RemoveResponse: [wire(v1alpha.RemoveResponse, {})],
};

// ---------------------------------------------------------------------------
// Independent decoding (protobufjs)

interface WireField {
  field: number;
  wireType: number;
  /** Payload of a length-delimited field. */
  bytes?: Uint8Array;
  /** Value of a varint field. */
  varint?: number;
}

/** Splits an encoded message into its top-level fields, in order. */
function readFields(bytes: Uint8Array): WireField[] {
  const reader = protobuf.Reader.create(bytes);
  const fields: WireField[] = [];
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (wireType === LEN) {
      fields.push({ field, wireType, bytes: reader.bytes() });
    } else if (wireType === VARINT) {
      fields.push({ field, wireType, varint: reader.uint32() });
    } else {
      reader.skipType(wireType);
      fields.push({ field, wireType });
    }
  }
  return fields;
}

/** The field → wire type layout seen across the encodings of one message. */
function layoutOf(message: string, encodings: Uint8Array[]): Record<number, number> {
  const layout: Record<number, number> = {};
  for (const { field, wireType } of encodings.flatMap(readFields)) {
    assert.ok(
      layout[field] === undefined || layout[field] === wireType,
      `${message}: field ${field} seen with wire types ${layout[field]} and ${wireType}`,
    );
    layout[field] = wireType;
  }
  return layout;
}

const text = (bytes: Uint8Array | undefined): string | undefined =>
  bytes && Buffer.from(bytes).toString("utf8");

// ---------------------------------------------------------------------------
// Checks shared by both generations

function checkFields(expected: Record<string, Fields>, samples: Record<string, Uint8Array[]>): void {
  for (const [message, fields] of Object.entries(expected)) {
    const encodings = samples[message] ?? [];
    assert.ok(encodings.length > 0, `${message}: no sample`);
    assert.deepEqual(layoutOf(message, encodings), { ...fields }, `${message}: field number → wire type`);
  }
}

/** A map<string,string> entry is a message with key = 1 (string), value = 2 (string). */
function checkMaps(maps: Record<string, number>, samples: Record<string, Uint8Array[]>): void {
  for (const [message, mapField] of Object.entries(maps)) {
    const entries = (samples[message] ?? [])
      .flatMap(readFields)
      .filter(({ field }) => field === mapField)
      .map(({ bytes }) => readFields(bytes ?? new Uint8Array()));
    assert.equal(entries.length, 1, `${message}.${mapField}: one map entry`);
    assert.deepEqual(
      entries[0]?.map(({ field, wireType, bytes }) => ({ field, wireType, text: text(bytes) })),
      [
        { field: 1, wireType: LEN, text: MAP_KEY },
        { field: 2, wireType: LEN, text: MAP_VALUE },
      ],
      `${message}.${mapField}: map entry layout`,
    );
  }
}

/** An int32 travels as the two's-complement varint of its value. */
function checkInt32(fields: Record<string, number>, samples: Record<string, Uint8Array[]>): void {
  for (const [message, int32Field] of Object.entries(fields)) {
    const values = (samples[message] ?? [])
      .flatMap(readFields)
      .filter(({ field }) => field === int32Field)
      .map(({ varint }) => (varint ?? 0) | 0);
    assert.deepEqual(values, [EXIT_CODE], `${message}.${int32Field}: int32 value on the wire`);
  }
}

/** enum Stream at field 1: STDERR travels as varint 1; STDOUT is the zero value, so it is not sent. */
function checkStreamEnum(
  message: string,
  generated: { STDOUT: number; STDERR: number },
  encode: (stream: number) => Uint8Array,
): void {
  assert.deepEqual(
    { STDOUT: generated.STDOUT, STDERR: generated.STDERR },
    STREAM_ENUM,
    `${message}.Stream values`,
  );
  assert.deepEqual(
    readFields(encode(generated.STDERR)),
    [{ field: 1, wireType: VARINT, varint: STREAM_ENUM.STDERR }],
    `${message}: STDERR on the wire`,
  );
  assert.deepEqual(readFields(encode(generated.STDOUT)), [], `${message}: STDOUT is the default`);
}

interface ServiceDefinition {
  fullName: string;
  methods: Record<
    string,
    {
      name: string;
      requestType: unknown;
      requestStream: boolean;
      responseType: unknown;
      responseStream: boolean;
    }
  >;
}

/** Renders each method as PROTOCOL.md does: `/pkg.Service/Name` → "Req → stream Res". */
function checkService(
  definition: ServiceDefinition,
  module: Record<string, unknown>,
  expected: { fullName: string; methods: Record<string, string> },
): void {
  const nameOf = (codec: unknown): string =>
    Object.entries(module).find(([, value]) => value === codec)?.[0] ?? "<unknown message>";
  assert.equal(definition.fullName, expected.fullName);
  const actual = Object.fromEntries(
    Object.values(definition.methods).map((method) => [
      `/${definition.fullName}/${method.name}`,
      `${method.requestStream ? "stream " : ""}${nameOf(method.requestType)} → ` +
        `${method.responseStream ? "stream " : ""}${nameOf(method.responseType)}`,
    ]),
  );
  const wanted = Object.fromEntries(
    Object.entries(expected.methods).map(([name, shape]) => [`/${expected.fullName}/${name}`, shape]),
  );
  assert.deepEqual(actual, wanted);
}

// ---------------------------------------------------------------------------
// Tests

void test("plugin.v1 messages: field numbers, wire types, maps, int32 and enum values", () => {
  checkFields(V1_FIELDS, V1_SAMPLES);
  checkMaps(V1_MAPS, V1_SAMPLES);
  checkInt32(V1_INT32, V1_SAMPLES);
  checkStreamEnum("ExecOutput", v1.ExecOutput_Stream, (stream) =>
    wire(v1.ExecOutput, { stream, data: Buffer.alloc(0), exitCode: 0, done: false, errorMessage: "" }),
  );
});

void test("plugin.v1alpha messages: field numbers, wire types, oneofs, maps, int32 and enum values", () => {
  checkFields(V1ALPHA_FIELDS, V1ALPHA_SAMPLES);
  for (const [message, cases] of Object.entries(V1ALPHA_ONEOFS)) {
    const encodings: Record<string, Uint8Array> =
      V1ALPHA_ONEOF_SAMPLES[message as keyof typeof V1ALPHA_ONEOFS];
    for (const [oneofCase, field] of Object.entries(cases)) {
      const encoding = encodings[oneofCase] ?? new Uint8Array();
      assert.deepEqual(
        readFields(encoding).map(({ field, wireType }) => ({ field, wireType })),
        [{ field, wireType: LEN }],
        `${message}.${oneofCase}: oneof case`,
      );
    }
  }
  checkMaps(V1ALPHA_MAPS, V1ALPHA_SAMPLES);
  checkInt32(V1ALPHA_INT32, V1ALPHA_SAMPLES);
  checkStreamEnum("DataChunk", v1alpha.DataChunk_Stream, (stream) =>
    wire(v1alpha.DataChunk, { stream, data: Buffer.alloc(0) }),
  );
});

void test("plugin.v1 service: full name, methods, message types and streaming", () => {
  checkService(v1.BackendPluginDefinition, v1, V1_RPCS);
});

void test("plugin.v1alpha service: full name, methods, message types and streaming", () => {
  checkService(v1alpha.BackendPluginDefinition, v1alpha, V1ALPHA_RPCS);
});
