/** RPCs a backend's limits may give a deadline, by their names in the protocols. */
export const limitedRpcs = [
  "create",
  "start",
  "exec",
  "copyIn",
  "copyOut",
  "copyLocal",
  "updateEnv",
  "isHealthy",
  "remove",
] as const;
export type LimitedRpc = (typeof limitedRpcs)[number];

/** What the core holds a backend's environments to. */
export interface BackendLimits {
  maxEnvironments?: number;
  /** How long a Create at maxEnvironments waits for a slot; 0: refused at once. */
  createWaitMs: number;
  /** Most bytes of file content in one CopyIn; unset: the tar checker's default (64 GiB). */
  maxCopyInBytes?: number;
  rpcTimeoutMs: Partial<Record<LimitedRpc, number>>;
}
