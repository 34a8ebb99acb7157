import type { Readable, Writable } from "node:stream";

/** What the engine writes in place of output when an exec could not start at all (exit code 126/127). */
const startFailure =
  /^(OCI runtime exec failed|unable to find (user|group)|exec failed|uids and gids must be in range)/;

/** Bytes of the first payload looked at to tell the engine's "could not start" message from output. */
const probeBytes = 64;

/**
 * Splits the engine's multiplexed exec stream (8-byte frame headers: stream
 * type, then the payload length) into stdout and stderr, waiting for each
 * sink to drain, so a slow client holds the command back instead of
 * filling memory. A first frame that is the engine's own "could not start"
 * message is held back and returned instead of written.
 *
 * Payloads are passed on as views of the chunks they arrive in, a frame
 * split across chunks in pieces: frames (up to 32 KiB) straddle the
 * socket's 64 KiB reads all the time, and joining the pieces first copied
 * nearly every byte once more. A frame cut short by the end of the stream
 * (the engine never sends one) is passed on as far as it came.
 */
export async function demuxExecOutput(
  source: Readable,
  sinks: { stdout: Writable; stderr: Writable },
): Promise<{ heldBack?: string }> {
  const header = Buffer.alloc(8);
  let headerBytes = 0;
  let remaining = 0;
  let sink = sinks.stdout;
  /** The first frame's pieces while it is looked at; undefined once it is known not to be the message. */
  let probe: Buffer[] | undefined = [];
  let heldBack: string | undefined;
  const write = async (piece: Buffer) => {
    if (!sink.write(piece)) await new Promise<void>((resolve) => sink.once("drain", resolve));
  };
  /** Decides on the first frame once enough of it (or all of it) is in; writes it unless it is the message. */
  const settleProbe = async (whole: boolean) => {
    const seen = Buffer.concat(probe!);
    if (startFailure.test(seen.toString("utf8", 0, probeBytes))) {
      if (!whole) return; // the message: keep gathering it to its end
      heldBack = seen.toString("utf8").trim();
    } else if (seen.length > 0) {
      await write(seen);
    }
    probe = undefined;
  };
  for await (const chunk of source as AsyncIterable<Buffer>) {
    for (let at = 0; at < chunk.length;) {
      if (remaining === 0) {
        const n = Math.min(8 - headerBytes, chunk.length - at);
        chunk.copy(header, headerBytes, at, at + n);
        headerBytes += n;
        at += n;
        if (headerBytes < 8) continue;
        headerBytes = 0;
        sink = header[0] === 2 ? sinks.stderr : sinks.stdout;
        remaining = header.readUInt32BE(4);
        if (remaining === 0 && probe) await settleProbe(true);
        continue;
      }
      const piece = chunk.subarray(at, at + Math.min(remaining, chunk.length - at));
      at += piece.length;
      remaining -= piece.length;
      if (!probe) {
        await write(piece);
        continue;
      }
      probe.push(piece);
      const probed = probe.reduce((sum, part) => sum + part.length, 0);
      if (remaining === 0 || probed >= probeBytes) await settleProbe(remaining === 0);
    }
  }
  if (probe && probe.length > 0) await settleProbe(true);
  return { heldBack };
}

/** Writes text that was held back after all, when it turned out to be the command's own output. */
export function release(text: string | undefined, sink: Writable): void {
  if (text !== undefined) sink.write(`${text}\n`);
}
