/**
 * berth's Prometheus metrics, in a registry of their own (one per daemon, so
 * tests can run many daemons in one process). Every label has a bounded set
 * of values: protocol, backend (names from the configuration), RPC, gRPC code,
 * copy direction, exec outcome. Never environment ids or image names.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** How a command ended, for berth_exec_duration_seconds. */
export type ExecOutcome = "exited" | "failed" | "cancelled" | "error";

export class Metrics {
  readonly registry = new Registry();

  readonly rpcRequests = new Counter({
    name: "berth_rpc_requests_total",
    help: "RPCs handled, by protocol generation, backend, RPC and gRPC status code",
    labelNames: ["protocol", "backend", "rpc", "code"] as const,
    registers: [this.registry],
  });

  readonly rpcDuration = new Histogram({
    name: "berth_rpc_duration_seconds",
    help: "How long RPCs took, by protocol generation, backend and RPC (streams: until their end)",
    labelNames: ["protocol", "backend", "rpc"] as const,
    buckets: [0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200],
    registers: [this.registry],
  });

  readonly environmentsActive = new Gauge({
    name: "berth_environments_active",
    help: "Environments that exist now (created and not removed), by backend",
    labelNames: ["backend"] as const,
    registers: [this.registry],
  });

  readonly createsWaiting = new Gauge({
    name: "berth_creates_waiting",
    help: "Creates waiting for a backend at limits.maxEnvironments to remove an environment, by backend",
    labelNames: ["backend"] as const,
    registers: [this.registry],
  });

  readonly createWaitSeconds = new Histogram({
    name: "berth_create_wait_seconds",
    help: "How long Creates waited for a free environment slot (only those that had to wait), by backend",
    labelNames: ["backend"] as const,
    buckets: [0.1, 1, 5, 15, 60, 300, 900],
    registers: [this.registry],
  });

  readonly copyBytes = new Counter({
    name: "berth_copy_bytes_total",
    help: "Bytes of tar streams copied into (CopyIn) and out of (CopyOut) environments, by backend",
    labelNames: ["backend", "direction"] as const,
    registers: [this.registry],
  });

  readonly execDuration = new Histogram({
    name: "berth_exec_duration_seconds",
    help: "How long commands ran, by backend and outcome (exited, failed to start, cancelled, error); its _count is the number of Execs",
    labelNames: ["backend", "outcome"] as const,
    buckets: [0.05, 0.25, 1, 5, 15, 60, 300, 900, 3600, 14400],
    registers: [this.registry],
  });

  readonly execCancellations = new Counter({
    name: "berth_exec_cancellations_total",
    help: "Execs cancelled by the runner (step timeout, cancelled job) or by Remove, by backend",
    labelNames: ["backend"] as const,
    registers: [this.registry],
  });

  readonly reconcilerRemovals = new Counter({
    name: "berth_reconciler_removals_total",
    help: "Environments the reconciler removed, by backend and reason (orphan: no record; too old: past reconciler.maxAgeSeconds)",
    labelNames: ["backend", "reason"] as const,
    registers: [this.registry],
  });

  constructor() {
    // Process memory, CPU, file descriptors, event-loop lag, GC: berth_process_*, berth_nodejs_*.
    collectDefaultMetrics({ register: this.registry, prefix: "berth_" });
  }

  /** Prometheus text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
