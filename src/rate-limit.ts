/**
 * Token buckets per caller, for the cheap calls a client can flood
 * (health checks, Capabilities): each caller may make `perSecond` of them a
 * second on average and twice that in a burst, so one busy or broken
 * client cannot slow everybody's Exec down. Buckets of callers that have
 * gone quiet are dropped, so the map stays small.
 */
export class CallerRateLimit {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private lastSweep = 0;

  constructor(
    private readonly perSecond: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Takes one call's token for the caller; false when the caller is over its rate. */
  take(caller: string): boolean {
    if (this.perSecond <= 0) return true;
    const now = this.now();
    const burst = 2 * this.perSecond;
    this.sweep(now, burst);
    const bucket = this.buckets.get(caller) ?? { tokens: burst, at: now };
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
    bucket.at = now;
    this.buckets.set(caller, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Drops the buckets that have filled up again: those callers are back to a clean slate anyway. */
  private sweep(now: number, burst: number): void {
    if (now - this.lastSweep < 10_000) return;
    this.lastSweep = now;
    for (const [caller, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond >= burst) this.buckets.delete(caller);
    }
  }
}
