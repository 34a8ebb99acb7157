import { Writable } from "node:stream";

/** The most stderr held back while it may still be a reason. */
const maxHeldBytes = 64 * 1024;

/**
 * Passes a command's stderr through, except when it starts with a prefix
 * that berth's own tooling writes when the command could not be run at all
 * (the kubernetes exec wrapper, bubblewrap): then the text is held back, to
 * become the reason, or released if it was the command's own output after all.
 */
export class PrefixCapture extends Writable {
  private head = Buffer.alloc(0);
  private decided: "pass" | "capture" | undefined;

  constructor(
    private readonly sink: Writable,
    private readonly prefix: string,
  ) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.decided === "pass") {
      this.forward(chunk, callback);
      return;
    }
    this.head = Buffer.concat([this.head, chunk]);
    if (this.decided === undefined) {
      const prefix = Buffer.from(this.prefix);
      const compared = Math.min(this.head.length, prefix.length);
      if (!this.head.subarray(0, compared).equals(prefix.subarray(0, compared))) {
        this.decided = "pass";
        const held = this.head;
        this.head = Buffer.alloc(0);
        this.forward(held, callback);
        return;
      }
      if (this.head.length >= prefix.length) this.decided = "capture";
    }
    if (this.head.length > maxHeldBytes) {
      // No reason is this long: it is the command's own output, and it must not pile up here.
      this.decided = "pass";
      const held = this.head;
      this.head = Buffer.alloc(0);
      this.forward(held, callback);
      return;
    }
    callback();
  }

  /** The held text after the prefix: the reason, if the command did not run. */
  failure(): string | undefined {
    return this.decided === "capture"
      ? this.head.toString("utf8").slice(this.prefix.length).trim()
      : undefined;
  }

  /** Writes out anything still held back: it was the command's own output after all. */
  release(): void {
    if (this.head.length > 0 && this.decided !== "pass") this.sink.write(this.head);
    this.head = Buffer.alloc(0);
  }

  private forward(chunk: Buffer, callback: (err?: Error | null) => void): void {
    if (this.sink.write(chunk)) callback();
    else this.sink.once("drain", () => callback());
  }
}

/** A sink that keeps the first `limit` bytes written to it. */
export class CollectingWritable extends Writable {
  private readonly chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit: number) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    if (this.size < this.limit) {
      const part = chunk.subarray(0, this.limit - this.size);
      this.chunks.push(part);
      this.size += part.length;
    }
    callback();
  }

  text(): string {
    return Buffer.concat(this.chunks).toString("utf8");
  }
}
