/**
 * A queue from one producer to one async consumer. A push can carry a
 * callback that runs once the consumer has taken the item: that is how a
 * producer (a command's output, a tar stream) is held back by a slow client.
 */
export class EventChannel<T> implements AsyncIterable<T> {
  private readonly items: { value: T; taken?: () => void }[] = [];
  private wake?: () => void;
  private ended = false;
  private abandoned = false;
  private error: { err: unknown } | undefined;

  push(value: T, taken?: () => void): void {
    if (this.abandoned) {
      taken?.();
      return;
    }
    this.items.push({ value, taken });
    this.signal();
  }

  /** No more items: the consumer ends after taking what is queued. */
  end(): void {
    this.ended = true;
    this.signal();
  }

  /** The consumer throws err after taking what is queued. */
  fail(err: unknown): void {
    this.error ??= { err };
    this.signal();
  }

  /** The consumer has gone: drop what is queued and release waiting producers. */
  abandon(): void {
    this.abandoned = true;
    for (const item of this.items.splice(0)) item.taken?.();
    this.signal();
  }

  private signal(): void {
    this.wake?.();
    this.wake = undefined;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      const item = this.items.shift();
      if (item) {
        // Also when the consumer stops at this very item: its producer must not wait for good.
        try {
          yield item.value;
        } finally {
          item.taken?.();
        }
        continue;
      }
      if (this.error) throw this.error.err;
      if (this.ended || this.abandoned) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}
