import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import * as v1 from "../gen/plugin/v1/plugin.js";
import * as v1alpha from "../gen/plugin/v1alpha/plugin.js";
import { v1DataCodecs, v1alphaDataCodecs, withDataCodecs } from "./data-codecs.js";

/** Sizes around every varint length boundary of the payload and of the enclosing message. */
const sizes = [
  0, 1, 100, 117, 118, 125, 126, 127, 128, 129, 16_370, 16_383, 16_384, 65_536, 2_097_151, 2_097_152,
];
const payloads = sizes.map((size) => randomBytes(size));

const v1alphaService = withDataCodecs(v1alpha.BackendPluginDefinition, v1alphaDataCodecs);
const v1alphaOutputEncoders = v1alphaDataCodecs.encoders;
const v1Service = withDataCodecs(v1.BackendPluginDefinition, v1DataCodecs);
const v1OutputEncoders = v1DataCodecs.encoders;

const encoded = (writer: { finish(): Uint8Array }) => Buffer.from(writer.finish());

describe("the data path's codecs", () => {
  it("v1alpha Exec data chunks are byte-identical to the generated encoding, on both streams", () => {
    for (const data of payloads) {
      for (const stream of [v1alpha.DataChunk_Stream.STDOUT, v1alpha.DataChunk_Stream.STDERR]) {
        const message: v1alpha.ExecOutput = { output: { $case: "data", value: { stream, data } } };
        const generated = encoded(v1alpha.ExecOutput.encode(message));
        assert.deepEqual(encoded(v1alphaService.methods.exec.responseType.encode(message)), generated);
        assert.deepEqual(Buffer.from(v1alphaOutputEncoders.exec(message)!), generated);
        assert.deepEqual(v1alpha.ExecOutput.decode(v1alphaOutputEncoders.exec(message)!), message);
      }
    }
  });

  it("v1alpha Exec results, and an unrecognized stream, go to the generated encoder", () => {
    const results: v1alpha.ExecOutput[] = [
      { output: { $case: "execComplete", value: { exitCode: 3 } } },
      { output: { $case: "execFailed", value: { errorMessage: "no such command" } } },
      { output: undefined },
    ];
    for (const message of results) assert.equal(v1alphaOutputEncoders.exec(message), undefined);
    const odd: v1alpha.ExecOutput = {
      output: { $case: "data", value: { stream: v1alpha.DataChunk_Stream.UNRECOGNIZED, data: payloads[3] } },
    };
    assert.equal(v1alphaOutputEncoders.exec(odd), undefined);
    for (const message of [...results, odd]) {
      assert.deepEqual(
        encoded(v1alphaService.methods.exec.responseType.encode(message)),
        encoded(v1alpha.ExecOutput.encode(message)),
      );
    }
  });

  it("v1 Exec data messages are byte-identical; messages with a result go to the generated encoder", () => {
    for (const data of payloads) {
      for (const stream of [v1.ExecOutput_Stream.STDOUT, v1.ExecOutput_Stream.STDERR]) {
        const message: v1.ExecOutput = { stream, data, exitCode: 0, done: false, errorMessage: "" };
        const generated = encoded(v1.ExecOutput.encode(message));
        assert.deepEqual(encoded(v1Service.methods.exec.responseType.encode(message)), generated);
        assert.deepEqual(Buffer.from(v1OutputEncoders.exec(message)!), generated);
      }
    }
    const final: v1.ExecOutput = {
      stream: 0,
      data: Buffer.alloc(0),
      exitCode: 2,
      done: true,
      errorMessage: "",
    };
    assert.equal(v1OutputEncoders.exec(final), undefined);
    assert.deepEqual(v1.ExecOutput.decode(encoded(v1Service.methods.exec.responseType.encode(final))), final);
  });

  it("CopyOut chunks of both generations are byte-identical", () => {
    for (const data of payloads) {
      assert.deepEqual(
        Buffer.from(v1alphaOutputEncoders.copyOut({ data })),
        encoded(v1alpha.CopyOutChunk.encode({ data })),
      );
      assert.deepEqual(
        Buffer.from(v1OutputEncoders.copyOut({ data })),
        encoded(v1.CopyOutChunk.encode({ data })),
      );
      assert.deepEqual(
        encoded(v1alphaService.methods.copyOut.responseType.encode({ data })),
        encoded(v1alpha.CopyOutChunk.encode({ data })),
      );
      assert.deepEqual(
        encoded(v1Service.methods.copyOut.responseType.encode({ data })),
        encoded(v1.CopyOutChunk.encode({ data })),
      );
    }
  });

  it("an encode into a given writer (a nested message) stays the generated one", () => {
    const message: v1alpha.ExecOutput = {
      output: { $case: "data", value: { stream: 1, data: payloads[8] } },
    };
    const writer = v1alphaService.methods.exec.responseType.encode(message, new BinaryWriter());
    assert.deepEqual(encoded(writer), encoded(v1alpha.ExecOutput.encode(message)));
  });

  it("CopyIn chunks decode as the generated decoder does, with data a view of the message, not a copy", () => {
    const cases: { v1alpha: v1alpha.CopyInChunk; v1: v1.CopyInChunk }[] = [
      {
        v1alpha: { environmentId: "berth-1", destPath: "/workspace/", data: payloads[9] },
        v1: { environmentId: "berth-1", destPath: "/workspace/", data: payloads[9] },
      },
      {
        v1alpha: { environmentId: undefined, destPath: undefined, data: payloads[14] },
        v1: { environmentId: "", destPath: "", data: payloads[14] },
      },
      {
        v1alpha: { environmentId: "", destPath: "/é/ü", data: Buffer.alloc(0) },
        v1: { environmentId: "", destPath: "/é/ü", data: Buffer.alloc(0) },
      },
    ];
    for (const { v1alpha: alpha, v1: one } of cases) {
      const alphaBytes = v1alpha.CopyInChunk.encode(alpha).finish();
      const decodedAlpha = v1alphaService.methods.copyIn.requestType.decode(alphaBytes);
      assert.deepEqual(decodedAlpha, v1alpha.CopyInChunk.decode(alphaBytes));
      if (alpha.data.length > 0) {
        assert.equal(
          decodedAlpha.data.buffer,
          alphaBytes.buffer,
          "the data is a view of the message's bytes",
        );
      }
      const oneBytes = v1.CopyInChunk.encode(one).finish();
      const decodedOne = v1Service.methods.copyIn.requestType.decode(oneBytes);
      assert.deepEqual(decodedOne, v1.CopyInChunk.decode(oneBytes));
      assert.ok(Buffer.isBuffer(decodedOne.data), "a Buffer, as the generated decoder gives");
    }
  });

  it("a CopyIn chunk with an unknown field goes to the generated decoder; a cut one throws as it does", () => {
    const known = Buffer.from(v1alpha.CopyInChunk.encode({ environmentId: "e", data: payloads[3] }).finish());
    const withUnknown = Buffer.concat([known, Buffer.from([0x28, 0x07])]); // field 5, varint 7
    assert.deepEqual(
      v1alphaService.methods.copyIn.requestType.decode(withUnknown),
      v1alpha.CopyInChunk.decode(withUnknown),
    );
    const cut = known.subarray(0, known.length - 10);
    assert.throws(
      () => v1alphaService.methods.copyIn.requestType.decode(cut),
      /premature EOF|out of range|index/i,
    );
    assert.throws(() => v1alpha.CopyInChunk.decode(cut), /premature EOF|out of range|index/i);
  });

  it("methods without a fast encoder are the generated ones", () => {
    assert.equal(
      v1alphaService.methods.create.responseType,
      v1alpha.BackendPluginDefinition.methods.create.responseType,
    );
    assert.equal(v1Service.methods.exec.requestType, v1.BackendPluginDefinition.methods.exec.requestType);
  });
});
