/**
 * The engine's multiplexed exec stream split into stdout and stderr: frames
 * cut anywhere across chunks, a sink's backpressure holding the stream back,
 * and the engine's "could not start" message held back from the output.
 */
import assert from "node:assert/strict";
import { Readable, Writable } from "node:stream";
import { describe, test } from "node:test";
import { demuxExecOutput, release } from "./demux.js";

/** One frame: type (1 stdout, 2 stderr), three zero bytes, the payload length, the payload. */
function frame(type: number, payload: string | Buffer): Buffer {
  const body = Buffer.from(payload);
  const header = Buffer.alloc(8);
  header[0] = type;
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

/** A sink that keeps what it is written, one entry per write. */
function collector(): Writable & { writes: string[] } {
  const writes: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      writes.push(chunk.toString());
      callback();
    },
  });
  return Object.assign(sink, { writes });
}

async function demux(chunks: Buffer[]) {
  const stdout = collector();
  const stderr = collector();
  const { heldBack } = await demuxExecOutput(Readable.from(chunks), { stdout, stderr });
  return { stdout: stdout.writes, stderr: stderr.writes, heldBack };
}

describe("frames", () => {
  test("each payload goes to its stream, in order; type 0 (stdin) counts as stdout", async () => {
    const result = await demux([
      Buffer.concat([frame(1, "out 1\n"), frame(2, "err 1\n"), frame(1, "out 2\n"), frame(0, "tty\n")]),
    ]);
    assert.deepEqual(result, {
      stdout: ["out 1\n", "out 2\n", "tty\n"],
      stderr: ["err 1\n"],
      heldBack: undefined,
    });
  });

  test("frames cut at every byte, headers included: each stream's bytes come out in order, no header among them", async () => {
    const bytes = Buffer.concat([frame(1, "hello "), frame(2, "warning"), frame(1, "world")]);
    const oneByteChunks = [...bytes].map((byte) => Buffer.from([byte]));
    const result = await demux(oneByteChunks);
    // A frame split across chunks is passed on in pieces (views of the chunks, not copies).
    assert.deepEqual(
      { stdout: result.stdout.join(""), stderr: result.stderr.join(""), heldBack: result.heldBack },
      { stdout: "hello world", stderr: "warning", heldBack: undefined },
    );
  });

  test("binary payloads and empty frames are passed as they are", async () => {
    const binary = Buffer.from([0, 255, 1, 2, 0x80, 10]);
    const stdout: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        stdout.push(chunk);
        callback();
      },
    });
    await demuxExecOutput(Readable.from([frame(1, ""), frame(1, binary)]), {
      stdout: sink,
      stderr: collector(),
    });
    assert.deepEqual(Buffer.concat(stdout), binary);
  });

  test("an incomplete frame at the end of the stream is passed on as far as it came (the engine never sends one)", async () => {
    const truncated = frame(1, "cut short").subarray(0, 12);
    assert.deepEqual(await demux([frame(2, "whole"), truncated]), {
      stdout: ["cut "],
      stderr: ["whole"],
      heldBack: undefined,
    });
  });
});

describe("backpressure", () => {
  test("a sink that is full holds the stream back: it is never handed more than one frame at a time", async () => {
    const payload = (n: number) => String(n).repeat(1000);
    let finishWrite: (() => void) | undefined;
    const writes: string[] = [];
    const slow = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _encoding, callback) {
        writes.push(chunk.toString());
        finishWrite = callback;
      },
    });
    const frames = [1, 2, 3, 4, 5].map((n) => frame(1, payload(n)));
    const done = demuxExecOutput(Readable.from([Buffer.concat(frames)]), {
      stdout: slow,
      stderr: collector(),
    });
    const settle = () => new Promise((resolve) => setTimeout(resolve, 10));
    for (let n = 1; n <= 5; n++) {
      await settle();
      assert.equal(writes.length, n);
      assert.equal(slow.writableLength, 1000, `only frame ${n} is in the sink, not the frames after it`);
      finishWrite!();
    }
    await done;
    assert.deepEqual(writes, [1, 2, 3, 4, 5].map(payload));
  });
});

describe("the engine's own start failures", () => {
  for (const message of [
    'OCI runtime exec failed: exec failed: unable to start container process: exec: "nope": executable file not found in $PATH: unknown',
    "unable to find user nobody2: no matching entries in passwd file",
    "unable to find group staff2: no matching entries in group file",
    "exec failed: permission denied",
    "uids and gids must be in range 0-65535",
  ]) {
    test(`a first frame "${message.slice(0, 30)}…" is held back, not written`, async () => {
      assert.deepEqual(await demux([frame(1, `${message}\r\n`)]), {
        stdout: [],
        stderr: [],
        heldBack: message,
      });
    });
  }

  test("the same text after the first frame, or not at the start of it, is the command's output", async () => {
    const text = "OCI runtime exec failed: from a script\n";
    assert.deepEqual(await demux([frame(1, "first\n"), frame(2, text)]), {
      stdout: ["first\n"],
      stderr: [text],
      heldBack: undefined,
    });
    assert.deepEqual(await demux([frame(1, `echo: ${text}`)]), {
      stdout: [`echo: ${text}`],
      stderr: [],
      heldBack: undefined,
    });
  });

  test("a held-back first frame does not hold back the frames after it", async () => {
    assert.deepEqual(await demux([frame(2, "exec failed: x"), frame(1, "later\n")]), {
      stdout: ["later\n"],
      stderr: [],
      heldBack: "exec failed: x",
    });
  });

  test("release writes held-back text with a newline, and nothing when there is none", () => {
    const sink = collector();
    release(undefined, sink);
    release("unable to find user 1000", sink);
    assert.deepEqual(sink.writes, ["unable to find user 1000\n"]);
  });
});
