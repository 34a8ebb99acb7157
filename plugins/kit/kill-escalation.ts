/**
 * Stopping a cancelled command the way a container runtime stops a
 * container: SIGTERM, so it can clean up, then SIGKILL once the grace
 * (`killGraceMs`, the same option on every driver) has passed.
 */
export type StopSignal = "TERM" | "KILL";

export interface KillEscalation {
  /** The command is gone: SIGKILL is no longer needed. */
  cancel(): void;
}

/**
 * Sends TERM now and KILL after graceMs unless cancelled first. `send`
 * reports its own failures (it runs unawaited); the timer never keeps the
 * daemon alive.
 */
export function escalateKill(send: (signal: StopSignal) => Promise<void>, graceMs: number): KillEscalation {
  void send("TERM");
  const timer = setTimeout(() => void send("KILL"), graceMs);
  timer.unref();
  return { cancel: () => clearTimeout(timer) };
}
