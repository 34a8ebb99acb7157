import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import type {
  CopyInChunk as V1CopyInChunk,
  CopyOutChunk as V1CopyOutChunk,
  ExecOutput as V1ExecOutput,
} from "../gen/plugin/v1/plugin.js";
import type {
  CopyInChunk as V1alphaCopyInChunk,
  CopyOutChunk as V1alphaCopyOutChunk,
  ExecOutput as V1alphaExecOutput,
} from "../gen/plugin/v1alpha/plugin.js";

/**
 * Codecs for the messages that carry a job's bytes, the daemon's hottest
 * path, both generations. CopyIn chunks are decoded without copying their
 * data: the generated decoder returns `Buffer.from(bytes)`, a copy (and an
 * allocation) of every byte a runner copies in, while the message's bytes
 * are grpc-js's own buffer for that one message, which nothing else holds,
 * so a view of them is as safe.
 *
 * Exec output and CopyOut chunks are encoded with one copy: every byte a job prints or
 * copies out passes here. The generated encoder writes a bytes field into a
 * zero-filled buffer it grows, shifts the payload once per enclosing
 * message to fit the length prefixes, and copies it out again at the end:
 * four passes over the data and two large allocations per message: with
 * the collections those allocations forced, about a fifth of the daemon's
 * CPU on the Exec output path (4.8-5.0 s per GiB before, 4.0-4.4 after,
 * grpc-go client, host driver). These write the few header bytes and copy the payload once,
 * into one reused buffer. Other messages of the same type (an exit code,
 * an error) are left to the generated encoder.
 *
 * The reuse is safe because of how the bytes are consumed: grpc-js calls
 * the serializer inside `sendMessage` and copies its result into the
 * message's frame (length prefix + bytes) before it returns, so nothing
 * holds the encoding when the next message is encoded. The daemon test
 * "output of every size reaches the client byte for byte" would catch a
 * grpc-js that kept it (each message would show the next one's bytes).
 */

/** Bytes a varint of `value` (< 2^32) takes. */
function varintSize(value: number): number {
  let size = 1;
  while (value >= 0x80) {
    value >>>= 7;
    size++;
  }
  return size;
}

function writeVarint(buffer: Buffer, at: number, value: number): number {
  while (value >= 0x80) {
    buffer[at++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  buffer[at++] = value;
  return at;
}

/** Messages up to this size are encoded into the shared buffer; larger ones (rare) get their own. */
const reusedBytes = 1024 * 1024;
let reused = Buffer.allocUnsafe(0);

/** A buffer of `size` bytes, valid until the next call (see the note at the top). */
function outputBuffer(size: number): Buffer<ArrayBuffer> {
  if (size > reusedBytes) return Buffer.allocUnsafe(size);
  if (reused.length < size) reused = Buffer.allocUnsafe(reusedBytes);
  return reused.subarray(0, size);
}

/** A length-delimited field's tag: field number and wire type 2. */
const lengthDelimited = (field: number) => (field << 3) | 2;

/**
 * The encoding of a message whose only set fields are an optional small
 * enum (`enumField`, omitted when 0, as proto3 does) and a bytes field,
 * wrapped in the length-delimited fields of `enclosing` (outermost first).
 * The result is valid until the next call: it is for a serializer whose
 * caller copies it at once.
 */
export function encodeBytesMessage(
  data: Uint8Array,
  dataField: number,
  enclosing: readonly number[] = [],
  enumField?: { field: number; value: number },
): Buffer<ArrayBuffer> {
  const enumBytes = enumField && enumField.value !== 0 ? 1 + varintSize(enumField.value) : 0;
  const dataBytes = data.length === 0 ? 0 : 1 + varintSize(data.length) + data.length;
  // Sizes of the message at each level, innermost last.
  const sizes = [enumBytes + dataBytes];
  for (let level = enclosing.length - 1; level >= 0; level--) {
    const inner = sizes[0];
    sizes.unshift(1 + varintSize(inner) + inner);
  }
  const buffer = outputBuffer(sizes[0]);
  let at = 0;
  enclosing.forEach((field, level) => {
    buffer[at++] = lengthDelimited(field);
    at = writeVarint(buffer, at, sizes[level + 1]);
  });
  if (enumBytes > 0) {
    buffer[at++] = enumField!.field << 3;
    at = writeVarint(buffer, at, enumField!.value);
  }
  if (dataBytes > 0) {
    buffer[at++] = lengthDelimited(dataField);
    at = writeVarint(buffer, at, data.length);
    buffer.set(data, at);
  }
  return buffer;
}

/** A writer that already holds a whole message: nice-grpc takes `encode(message).finish()`. */
class EncodedWriter extends BinaryWriter {
  constructor(private readonly encoded: Uint8Array<ArrayBuffer>) {
    super();
  }

  override finish(): Uint8Array<ArrayBuffer> {
    return this.encoded;
  }
}

interface Encodable<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
}

/**
 * `type` with its top-level encode taking `fast` when it returns bytes; a
 * nested encode (into a given writer) and the messages `fast` declines
 * (undefined) go to the generated encoder.
 */
export function withFastEncode<T, M extends Encodable<T>>(
  type: M,
  fast: (message: T) => Uint8Array<ArrayBuffer> | undefined,
): M {
  return {
    ...type,
    encode(message: T, writer?: BinaryWriter): BinaryWriter {
      const bytes = writer === undefined ? fast(message) : undefined;
      return bytes === undefined ? type.encode(message, writer) : new EncodedWriter(bytes);
    },
  };
}

interface ServiceDefinition {
  methods: Record<string, { responseType: Encodable<never> }>;
}

type FastEncoders<D extends ServiceDefinition> = {
  [K in keyof D["methods"]]?: (
    message: Parameters<D["methods"][K]["responseType"]["encode"]>[0],
  ) => Uint8Array<ArrayBuffer> | undefined;
};

/** The service definition with the responses of the named methods encoded by `encoders` where they can. */
function withFastOutputEncoding<D extends ServiceDefinition>(definition: D, encoders: FastEncoders<D>): D {
  const methods = Object.fromEntries(
    Object.entries(definition.methods).map(([key, method]) => {
      const fast = encoders[key];
      if (fast === undefined) return [key, method];
      return [key, { ...method, responseType: withFastEncode(method.responseType, fast) }];
    }),
  );
  return { ...definition, methods };
}

/** A stream number the one-byte enum path writes as the generated code does (0 omitted, 1); else undefined. */
const plainStream = (stream: number) => (stream === 0 || stream === 1 ? stream : undefined);

/** plugin.v1alpha: ExecOutput's data chunks (field 1, a DataChunk of stream = 1, data = 2) and CopyOutChunk (data = 1). */
const v1alphaOutputEncoders = {
  exec(message: V1alphaExecOutput) {
    if (message.output?.$case !== "data") return undefined;
    const { stream, data } = message.output.value;
    const value = plainStream(stream);
    return value === undefined ? undefined : encodeBytesMessage(data, 2, [1], { field: 1, value });
  },
  copyOut: (message: V1alphaCopyOutChunk) => encodeBytesMessage(message.data, 1),
};

/** plugin.v1: ExecOutput's data messages (stream = 1, data = 2, nothing else set) and CopyOutChunk (data = 1). */
const v1OutputEncoders = {
  exec(message: V1ExecOutput) {
    if (message.exitCode !== 0 || message.done || message.errorMessage !== "") return undefined;
    const value = plainStream(message.stream);
    return value === undefined ? undefined : encodeBytesMessage(message.data, 2, [], { field: 1, value });
  },
  copyOut: (message: V1CopyOutChunk) => encodeBytesMessage(message.data, 1),
};

interface Decodable<T> {
  decode(input: BinaryReader | Uint8Array, length?: number): T;
}

/** CopyInChunk's fields (environment_id = 1, dest_path = 2, data = 3) with data a view of `input`; undefined for anything else. */
function readCopyInChunk(
  input: Uint8Array,
): { environmentId?: string; destPath?: string; data: Buffer } | undefined {
  const reader = new BinaryReader(input);
  // The generated decoder's shape: both keys present, undefined when the field is absent.
  const fields: { environmentId?: string; destPath?: string; data: Buffer } = {
    environmentId: undefined,
    destPath: undefined,
    data: Buffer.alloc(0),
  };
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag === 10) fields.environmentId = reader.string();
    else if (tag === 18) fields.destPath = reader.string();
    else if (tag === 26) {
      const bytes = reader.bytes();
      fields.data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    } else return undefined; // an unknown field, or a known one with another wire type: the generated decoder's case
  }
  return fields;
}

/** `type` with its top-level decode taking `fast` unless it declines (undefined); a nested decode stays the generated one. */
function withFastDecode<T, M extends Decodable<T>>(type: M, fast: (input: Uint8Array) => T | undefined): M {
  return {
    ...type,
    decode(input: BinaryReader | Uint8Array, length?: number): T {
      const decoded = input instanceof Uint8Array && length === undefined ? fast(input) : undefined;
      return decoded ?? type.decode(input, length);
    },
  };
}

/** plugin.v1alpha CopyInChunk: environment_id and dest_path are optional (absent is undefined). */
const v1alphaCopyIn = (input: Uint8Array): V1alphaCopyInChunk | undefined => readCopyInChunk(input);

/** plugin.v1 CopyInChunk: absent strings are "". */
function v1CopyIn(input: Uint8Array): V1CopyInChunk | undefined {
  const fields = readCopyInChunk(input);
  return (
    fields && {
      environmentId: fields.environmentId ?? "",
      destPath: fields.destPath ?? "",
      data: fields.data,
    }
  );
}

/** plugin.v1alpha's data codecs: Exec output and CopyOut chunks encoded, CopyIn chunks decoded. */
export const v1alphaDataCodecs = { encoders: v1alphaOutputEncoders, decodeCopyIn: v1alphaCopyIn };
/** plugin.v1's data codecs. */
export const v1DataCodecs = { encoders: v1OutputEncoders, decodeCopyIn: v1CopyIn };

interface DataService<Chunk> extends ServiceDefinition {
  methods: ServiceDefinition["methods"] & { copyIn: { requestType: Decodable<Chunk> } };
}

/** The service definition with the data path's codecs: the encoders for its output, the decoder for CopyIn. */
export function withDataCodecs<Chunk, D extends DataService<Chunk>>(
  definition: D,
  codecs: { encoders: FastEncoders<D>; decodeCopyIn: (input: Uint8Array) => Chunk | undefined },
): D {
  const encoded = withFastOutputEncoding(definition, codecs.encoders);
  const copyIn = encoded.methods.copyIn;
  const requestType = withFastDecode(copyIn.requestType, codecs.decodeCopyIn);
  return { ...encoded, methods: { ...encoded.methods, copyIn: { ...copyIn, requestType } } };
}
