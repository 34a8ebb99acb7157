import type { Readable, Writable } from "node:stream";

/** What the engine writes in place of output when an exec could not start at all (exit code 126/127). */
const startFailure =
  /^(OCI runtime exec failed|unable to find (user|group)|exec failed|uids and gids must be in range)/;

/**
 * Splits the engine's multiplexed exec stream (8-byte frame headers: stream
 * type, then the payload length) into stdout and stderr, waiting for each
 * sink to drain, so a slow client holds the command back instead of
 * filling memory. A first frame that is the engine's own "could not start"
 * message is held back and returned instead of written.
 */
export async function demuxExecOutput(
  source: Readable,
  sinks: { stdout: Writable; stderr: Writable },
): Promise<{ heldBack?: string }> {
  let pending: Buffer = Buffer.alloc(0);
  let first = true;
  let heldBack: string | undefined;
  for await (const chunk of source as AsyncIterable<Buffer>) {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 8) {
      const length = pending.readUInt32BE(4);
      if (pending.length < 8 + length) break;
      const payload = pending.subarray(8, 8 + length);
      const sink = pending[0] === 2 ? sinks.stderr : sinks.stdout;
      pending = pending.subarray(8 + length);
      if (first && startFailure.test(payload.toString("utf8", 0, 64))) {
        heldBack = payload.toString("utf8").trim();
      } else if (!sink.write(payload)) {
        await new Promise<void>((resolve) => sink.once("drain", resolve));
      }
      first = false;
    }
  }
  return { heldBack };
}

/** Writes text that was held back after all, when it turned out to be the command's own output. */
export function release(text: string | undefined, sink: Writable): void {
  if (text !== undefined) sink.write(`${text}\n`);
}
